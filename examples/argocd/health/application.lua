-- Argo CD health check for argoproj.io/Application
-- (argocd-cm key: resource.customizations.health.argoproj.io_Application).
--
-- Argo CD (since 1.8) has no built-in health assessment for Application resources, so in an
-- "app of apps" the parent's sync waves do not wait for a child Application to become Healthy:
-- the FineTuneJobs Application (wave 1) could sync before the operator Application (wave 0) has
-- installed the CRD. With this check, wave 1 starts only once wave 0 reports Healthy.
local hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil and obj.status.health ~= nil then
  if obj.status.health.status ~= nil then
    hs.status = obj.status.health.status
  end
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
end
return hs
