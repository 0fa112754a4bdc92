-- Replays the pre-signed Opal deliveries in $BENCH_REQUESTS, each once, in order.
local requests = {}
local n = 0
local i = 0

function init(args)
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    local ts, sig, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
    n = n + 1
    requests[n] = wrk.format("POST", "/opal", {
      ["Content-Type"] = "application/json",
      ["X-Opal-Request-Timestamp"] = ts,
      ["X-Opal-Signature"] = sig,
    }, body)
  end
end

function request()
  i = i + 1
  if i > n then
    -- Ran out of distinct deliveries: the rest are duplicates, which the receiver answers
    -- without recording. run.sh sizes the set so this does not happen and checks it.
    i = 1
  end
  return requests[i]
end
