-- Argo CD health check for kubetune.io/FineTuneSweep
-- (argocd-cm key: resource.customizations.health.kubetune.io_FineTuneSweep).
--
-- Argo CD sets the global `obj` to the live object and expects a table {status, message}.
-- Phase, trials and conditions come from the kubetune operator (kubetune.api.FineTuneSweepStatus):
--   no status yet / older generation  -> Progressing (the operator has not acted on this spec)
--   Validated=False                   -> Degraded    (refused spec; the message names the field)
--   Pending, Running                  -> Progressing (trials ended of maxTrials, the best so far,
--                                                    and why the sweep waits when it does)
--   Succeeded                         -> Healthy     (the best trial and its value); with
--                                                    promote: serve, Promoted=False (WinnerMissing)
--                                                    Degraded, else by the Serving condition, which
--                                                    the operator mirrors from the best trial's
--                                                    FineTuneJob: ServingReady Healthy,
--                                                    ServingStarting/WaitingForEvaluation Progressing,
--                                                    else Degraded (a promoted sweep is Healthy only
--                                                    once the winner really serves)
--   Failed                            -> Degraded    (e.g. more than maxFailedTrials trials failed)
-- The trials are FineTuneJobs of their own, each with the FineTuneJob health check.

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

local function join(prefix, ...)
  local parts = {}
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

-- "4/6 (1 pruned, 0 failed) trials", or nil before the first trial.
local function trialsText(status)
  if nonEmpty(status.summary) then
    return status.summary .. " trials"
  end
  return nil
end

-- "best qwen-lr-3 (evalLoss 1.2345)", or nil before a trial succeeded.
local function bestText(status, spec)
  if not nonEmpty(status.bestTrial) then
    return nil
  end
  local metric = "value"
  if type(spec) == "table" and type(spec.objective) == "table" and nonEmpty(spec.objective.metric) then
    metric = spec.objective.metric
  end
  if status.bestValue ~= nil then
    return string.format("best %s (%s %.4f)", status.bestTrial, metric, status.bestValue)
  end
  return "best " .. status.bestTrial
end

-- Why the sweep waits: the message of the first condition that is not True, else status.message.
local function waiting(status)
  if type(status.conditions) == "table" then
    for _, c in ipairs(status.conditions) do
      if c.status ~= "True" and c.type ~= "Validated" and c.type ~= "Serving" and nonEmpty(c.message) then
        return c.message
      end
    end
  end
  if nonEmpty(status.message) then
    return status.message
  end
  return nil
end

local status = obj.status
if type(status) ~= "table" or status.phase == nil then
  local validated = type(status) == "table" and findCondition(status, "Validated") or nil
  if validated ~= nil and validated.status == "False" then
    hs.status = "Degraded"
    hs.message = join("Invalid spec", validated.message)
  else
    hs.status = "Progressing"
    hs.message = "Waiting for the kubetune operator to pick up the sweep"
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
  hs.message = join("Invalid spec", validated.message)
  return hs
end

local phase = status.phase
if phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = join(phase, trialsText(status), bestText(status, obj.spec), waiting(status))
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = join("Succeeded", trialsText(status), bestText(status, obj.spec))
  local promoted = findCondition(status, "Promoted")
  local serving = findCondition(status, "Serving")
  if promoted ~= nil and promoted.status == "False" then
    hs.status = "Degraded"
    hs.message = hs.message .. "; not served: " .. (promoted.message or promoted.reason or "")
  elseif promoted ~= nil and serving == nil then
    hs.status = "Progressing"
    hs.message = hs.message .. "; serving: " .. (promoted.message or "")
  elseif serving ~= nil then
    local text = serving.message
    if not nonEmpty(text) then
      text = serving.reason
    end
    if serving.status == "True" or serving.reason == "EvaluationNotImproved" then
      hs.status = "Healthy"
    elseif serving.reason == "ServingStarting" or serving.reason == "WaitingForEvaluation" then
      hs.status = "Progressing"
    else
      hs.status = "Degraded"
    end
    hs.message = hs.message .. "; serving: " .. (text or "")
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = join("Failed", trialsText(status), bestText(status, obj.spec), status.message)
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
