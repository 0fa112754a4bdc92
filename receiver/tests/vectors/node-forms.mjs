// Makes node-forms.json: deliveries signed by Node itself, as the senders' documentation
// signs them, for the forms that Node computes and hookwarden must compute the same way.
//
//   node receiver/tests/vectors/node-forms.mjs > receiver/tests/vectors/node-forms.json
//
// Everything is deterministic (HMAC and ed25519 signatures, fixed keys and times), so the
// same Node gives the same file; `make unit` checks the committed file against this script
// when node is on the PATH.
//
// - "json-stringify": the body as sent (pretty-printed, escaped, numbers written another
//   way) and `signed`, Node's JSON.stringify(JSON.parse(body)), with Opal's and Membrane's
//   signatures over `signed` (Opal: `v0:<timestamp>:<signed>`, Membrane: `<signed>`), as
//   their documentation's sample code computes them from `request.body`.
// - "standard-webhooks-v1a": Standard Webhooks asymmetric signatures, ed25519 over
//   `<id>.<timestamp>.<body>`, made by Node's crypto (OpenSSL) from a fixed seed; the
//   receiver's Secret holds `public` (whpk_), the sender's `secret` (whsk_).
import crypto from "node:crypto";

const SECRET = "hookwarden-node-forms-secret";
const TS = "1767225600"; // 2026-01-01T00:00:00Z

const hmacHex = (text) =>
  crypto.createHmac("sha256", SECRET).update(text).digest("hex");

// Bodies as a sender or a proxy may send them; each exercises one rule of the form.
const sent = [
  ["pretty-printed", '{\n  "type": "org-created",\n  "data": {\n    "org": { "id": "o-1", "name": "Acme" }\n  }\n}\n'],
  ["unicode escapes", '{"type":"org-created","name":"Caf\\u00e9 \\u2603","path":"a\\/b"}'],
  ["control characters", '{"type":"x","text":"tab\\there\\u0001\\u001f\\u007f\\b\\f\\n\\r\\"q\\"\\\\"}'],
  ["non-ASCII as it is", '{"type":"x","text":"é ☃ 😀 \u2028"}'],
  ["surrogate pairs and lone surrogates", '{"type":"x","pair":"\\ud83d\\ude00","lone":["\\ud800","\\udc00x","\\uD83D\\u0041"]}'],
  ["numbers", '{"type":"x","n":[1.0,-0,-0.0,1e21,1E2,0.0000001,0.1,1.5e-10,123e-20,100,-7.25e+3,2.5E+2]}'],
  ["integers past 2^53", '{"type":"x","n":[9007199254740993,123456789012345678901,18446744073709551615,-9007199254740995]}'],
  ["out of the doubles' range", '{"type":"x","n":[1e400,-1e400,5e-400]}'],
  ["array-index keys first", '{"type":"x","b":0,"10":1,"2":2,"01":3,"-1":4,"4294967294":5,"4294967295":6,"1.5":7,"0":8}'],
  ["nested and empty", '[ {"type":"x" , "a" : [ ] , "o" : { } } , [[ [ ] ]] , "s" , true , false , null ]'],
  ["whitespace everywhere", ' \t\r\n{ "type" :\r\n\t"x" } \n'],
];

const out = [];
for (const [what, body] of sent) {
  const signed = JSON.stringify(JSON.parse(body));
  out.push({
    kind: "json-stringify",
    what,
    scheme: "opal",
    secret: SECRET,
    body,
    signed,
    headers: {
      "X-Opal-Signature": hmacHex(`v0:${TS}:${signed}`),
      "X-Opal-Request-Timestamp": TS,
    },
  });
  out.push({
    kind: "json-stringify",
    what,
    scheme: "membrane",
    secret: SECRET,
    body,
    signed,
    headers: { "X-Signature": hmacHex(signed) },
  });
}

// ed25519 from a 32-byte seed: PKCS#8 is the seed behind a fixed 16-byte prefix.
const pkcs8 = (seed) =>
  crypto.createPrivateKey({
    key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]),
    format: "der",
    type: "pkcs8",
  });
const rawPublic = (key) =>
  crypto.createPublicKey(key).export({ format: "der", type: "spki" }).subarray(12);

const v1a = [
  ["small", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", '{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'],
  ["empty body", "msg_empty", ""],
  ["non-ASCII body", "msg_utf8", '{"type":"x","name":"Café ☃ 😀"}'],
];
v1a.forEach(([what, id, body], n) => {
  const seed = crypto.createHash("sha256").update(`hookwarden v1a seed ${n}`).digest();
  const key = pkcs8(seed);
  const sig = crypto.sign(null, Buffer.from(`${id}.${TS}.${body}`), key);
  out.push({
    kind: "standard-webhooks-v1a",
    what,
    scheme: "standard-webhooks",
    secret: "whsk_" + seed.toString("base64"),
    public: "whpk_" + rawPublic(key).toString("base64"),
    body,
    headers: {
      "webhook-id": id,
      "webhook-timestamp": TS,
      "webhook-signature": "v1a," + sig.toString("base64"),
    },
  });
});

process.stdout.write(JSON.stringify(out, null, 2) + "\n");
