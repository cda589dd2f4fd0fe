#!/usr/bin/env node
// Ask a swarm character for a line over MQTT v5 and print the reply as it streams in.
//
//   swarm serve --bus mqtt://127.0.0.1:1883 --name village        (in another terminal)
//   node ask.mjs --url mqtt://127.0.0.1:1883 --name village "A traveller asks for news. What do you say?"
//
// stdout: the streamed text (JSON: a `say` action), a newline, then the final reply as one line of JSON.
// Exit status 1 (message on stderr) if the server answers with an error or not at all.

import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import mqtt from "mqtt";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string", default: "mqtt://127.0.0.1:1883" },
    name: { type: "string", default: "default" },
    persona: { type: "string", default: "Mira" },
    role: { type: "string", default: "innkeeper" },
    traits: { type: "string", default: "warm, knows every rumour" },
    adapter: { type: "string" },
    "max-tokens": { type: "string", default: "48" },
    temperature: { type: "string", default: "0.7" },
    seed: { type: "string" },
    timeout: { type: "string", default: "60" },
  },
});
const line = positionals.join(" ") || "A traveller walks in and asks for news. What do you say?";

// The answer's shape, as a JSON schema: the server constrains decoding to it, so the final reply's `value`
// is always a valid object. (This one is a `say` action, the shape the bundled swarm-tiny was trained on.)
const SAY = {
  type: "object",
  properties: { type: { const: "say" }, text: { type: "string", maxLength: 160 } },
  required: ["type", "text"],
  additionalProperties: false,
};

// Requests go to swarm/<name>/runtime/generate; replies to a topic of our own, named in each request's
// Response Topic. The Correlation Data we attach comes back on every reply to that request.
const client = await mqtt.connectAsync(opts.url, { protocolVersion: 5, clientId: `ask-${randomUUID().slice(0, 8)}` });
const replyTopic = `game/${client.options.clientId}/replies`;
await client.subscribeAsync(replyTopic, { qos: 1 });

const id = randomUUID();
const correlation = Buffer.from(id);
const finished = new Promise((resolve, reject) => {
  const timer = setTimeout(
    () => reject(new Error(`no reply within ${opts.timeout} s: is \`swarm serve --name ${opts.name}\` running?`)),
    Number(opts.timeout) * 1000,
  );
  client.on("message", (topic, payload, packet) => {
    if (topic !== replyTopic || !correlation.equals(packet.properties?.correlationData ?? Buffer.alloc(0))) return;
    const reply = JSON.parse(payload.toString("utf8"));
    if (!reply.done) {
      process.stdout.write(reply.token); // a piece of the text, as soon as the model has it
      return;
    }
    clearTimeout(timer);
    if (reply.error !== undefined) reject(new Error(`${reply.code}: ${reply.error}`));
    else resolve(reply);
  });
});

const request = {
  id,
  persona: { name: opts.persona, role: opts.role, traits: opts.traits },
  messages: [{ role: "user", content: line }],
  schema: SAY,
  max_tokens: Number(opts["max-tokens"]),
  temperature: Number(opts.temperature),
  ...(opts.seed !== undefined && { seed: Number(opts.seed) }),
  ...(opts.adapter !== undefined && { adapter: opts.adapter }),
};
await client.publishAsync(`swarm/${opts.name}/runtime/generate`, JSON.stringify(request), {
  qos: 1,
  properties: { responseTopic: replyTopic, correlationData: correlation, contentType: "application/json" },
});

try {
  const done = await finished;
  process.stdout.write(`\n${JSON.stringify(done)}\n`);
} catch (error) {
  process.stdout.write("\n");
  console.error(`error: ${error.message}`);
  process.exitCode = 1;
} finally {
  await client.endAsync();
}
