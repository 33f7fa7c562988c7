-- Argo CD health check for kubetune.io/FineTuneJob
-- (argocd-cm key: resource.customizations.health.kubetune.io_FineTuneJob).
--
-- Argo CD sets the global `obj` to the live object and expects a table {status, message}.
-- Phase and conditions come from the kubetune operator (kubetune.api.FineTuneJobStatus):
--   no status yet / older generation  -> Progressing (the operator has not acted on this spec)
--   Validated=False                   -> Degraded    (invalid spec, or a change to an immutable
--                                                    field; the message names the field)
--   Pending, Running, Exporting       -> Progressing (with step/total, loss and ETA when known)
--   Succeeded                         -> Healthy     (with where the outputs are); with spec.serve, by
--                                                    the Serving condition: ServingReady or
--                                                    EvaluationNotImproved Healthy, ServingStarting or
--                                                    WaitingForEvaluation Progressing, else Degraded
--   Failed                            -> Degraded
--   Suspended                         -> Suspended   (spec.suspend, or Kueue holding the job)

local hs = {}

local function findCondition(status, ctype)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function nonEmpty(s)
  return s ~= nil and s ~= ""
end

local function duration(seconds)
  local s = math.floor(seconds)
  local h = math.floor(s / 3600)
  local m = math.floor((s % 3600) / 60)
  if h > 0 then
    return string.format("%dh%02dm", h, m)
  elseif m > 0 then
    return string.format("%dm%02ds", m, s % 60)
  end
  return string.format("%ds", s)
end

-- "120/1000 (12%), loss 1.4213, ETA 1h02m", or nil before the first report.
local function progressText(p)
  if type(p) ~= "table" then
    return nil
  end
  local parts = {}
  if nonEmpty(p.summary) then
    table.insert(parts, p.summary)
  elseif p.totalSteps ~= nil and p.totalSteps > 0 then
    table.insert(parts, string.format("%d/%d (%d%%)", p.step or 0, p.totalSteps, math.floor(p.percent or 0)))
  end
  if p.loss ~= nil then
    table.insert(parts, string.format("loss %.4f", p.loss))
  end
  if p.etaSeconds ~= nil then
    table.insert(parts, "ETA " .. duration(p.etaSeconds))
  end
  if #parts == 0 then
    return nil
  end
  return table.concat(parts, ", ")
end

-- The most specific human-readable explanation the operator left.
local function explanation(status, ctype)
  local c = findCondition(status, ctype)
  if c ~= nil and nonEmpty(c.message) then
    return c.message
  end
  if nonEmpty(status.message) then
    return status.message
  end
  return nil
end

local function join(prefix, ...)
  local parts = {}
  -- select("#") rather than ipairs: a nil part (no progress yet) must not hide the parts after it.
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if nonEmpty(v) then
      table.insert(parts, v)
    end
  end
  if #parts == 0 then
    return prefix
  end
  return prefix .. ": " .. table.concat(parts, "; ")
end

local status = obj.status
if type(status) ~= "table" or status.phase == nil then
  local validated = type(status) == "table" and findCondition(status, "Validated") or nil
  if validated ~= nil and validated.status == "False" then
    hs.status = "Degraded"
    hs.message = join("Invalid spec", validated.message)
  else
    hs.status = "Progressing"
    hs.message = "Waiting for the kubetune operator to pick up the job"
  end
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to act on generation %d (status is from %d)", generation, status.observedGeneration)
  return hs
end

local validated = findCondition(status, "Validated")
if validated ~= nil and validated.status == "False" then
  hs.status = "Degraded"
  if validated.reason == "ImmutableFieldChanged" then
    -- the job goes on with the spec it started with; git no longer describes it
    hs.message = join("Spec change rejected, the job keeps its original spec", validated.message)
  else
    hs.message = join("Invalid spec", validated.message)
  end
  return hs
end

local phase = status.phase
if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = join("Pending", explanation(status, "Running"))
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = join("Running", progressText(status.progress))
elseif phase == "Exporting" then
  hs.status = "Progressing"
  hs.message = join("Exporting the merged model", explanation(status, "Exporting"))
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  local where = nil
  if type(status.output) == "table" and nonEmpty(status.output.claimName) then
    where = "outputs in " .. status.output.claimName .. ":" .. (status.output.path or "")
    if nonEmpty(status.output.mergedPath) then
      where = where .. ", merged model in " .. status.output.mergedPath
    end
  end
  hs.message = join("Succeeded", progressText(status.progress), where)
  -- spec.serve: the Serving condition decides once it exists.
  local serving = findCondition(status, "Serving")
  if serving ~= nil then
    local text = serving.message
    if not nonEmpty(text) then
      text = serving.reason
    end
    if serving.status == "True" or serving.reason == "EvaluationNotImproved" then
      hs.status = "Healthy"  -- serving, or not serving by the user's own rule (evaluationImproves)
    elseif serving.reason == "ServingStarting" or serving.reason == "WaitingForEvaluation" then
      hs.status = "Progressing"
    else
      hs.status = "Degraded"  -- KServe/KAITO not installed, a refused object, a failed adapter copy
    end
    hs.message = hs.message .. "; serving: " .. (text or "")
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = join("Failed", explanation(status, "Failed"))
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = join("Suspended", explanation(status, "Suspended"))
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
