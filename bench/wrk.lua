-- Replays the pre-signed deliveries in $BENCH_REQUESTS, each once, in order: Opal's
-- (timestamp and signature headers), or Membrane's with BENCH_PROVIDER=membrane; POSTed to
-- the URL's path, or to the line's own path when it starts with one (the pool's requests:
-- `path<TAB>timestamp<TAB>signature<TAB>body`).
local requests = {}
local n = 0
local i = 0

function init(args)
  local membrane = os.getenv("BENCH_PROVIDER") == "membrane"
  local path = wrk.path
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    local to = path
    local own, rest = line:match("^(/[^\t]*)\t(.*)$")
    if own then
      to, line = own, rest
    end
    local ts, sig, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
    n = n + 1
    local headers = { ["Content-Type"] = "application/json" }
    if membrane then
      headers["X-Signature"] = sig
    else
      headers["X-Opal-Request-Timestamp"] = ts
      headers["X-Opal-Signature"] = sig
    end
    requests[n] = wrk.format("POST", to, headers, body)
  end
end

function request()
  i = i + 1
  if i > n then
    -- Ran out of distinct deliveries: the rest are duplicates, which the receiver answers
    -- without recording. The scripts size the set so this does not happen and check it.
    i = 1
  end
  return requests[i]
end
