// The baseline for bench/ingest: a minimal Probot app doing the receiver's job. Probot verifies
// the signature and parses; the handlers make the same decisions and the same Redis writes as
// codex-bot's receiver (app/webhook.py's Lua script: dedupe by delivery id, write an RQ-shaped
// job hash, push it on the intake queue). The job's data is JSON, not a pickle: it is there to
// cost the same, not to be run.
const fs = require("node:fs");
const zlib = require("node:zlib");
const Redis = require("ioredis");

const DELIVERY_TTL = 3 * 24 * 3600;
const RESULT_TTL = 7 * 24 * 3600;

module.exports = (app) => {
  const redis = new Redis(process.env.REDIS_URL);
  redis.defineCommand("claimAndEnqueue", {
    numberOfKeys: 4,
    lua: fs.readFileSync(process.env.BENCH_LUA_PATH, "utf8"),
  });
  const trigger = process.env.CODEX_TRIGGER_LABEL || "codex";
  const queue = `rq:queue:${process.env.CODEX_FAST_QUEUE || "codex-fast"}`;

  async function enqueue(context, kind, text) {
    const { payload } = context;
    const id = context.id;
    const number = payload.issue.number;
    const kwargs = {
      kind,
      repo: payload.repository.full_name,
      number,
      installation_id: payload.installation.id,
      sender: payload.sender.login,
      is_pull: Boolean(payload.issue.pull_request),
      comment_id: payload.comment ? payload.comment.id : null,
      text,
      task_id: id,
      delivery_id: id,
    };
    const now = new Date().toISOString();
    const data = zlib.deflateSync(
      JSON.stringify(["workers.intake.accept", null, [], kwargs]),
    );
    const fields = [
      "created_at", now, "data", data, "description",
      `workers.intake.accept ${context.name}.${payload.action}`,
      "origin", queue.slice("rq:queue:".length), "enqueued_at", now, "timeout", 120,
      "result_ttl", RESULT_TTL, "failure_ttl", RESULT_TTL, "status", "queued",
    ];
    const jobId = `intake-${id}`;
    await redis.claimAndEnqueue(
      `codexbot:delivery:${id}`, `rq:job:${jobId}`, queue, "rq:queues",
      DELIVERY_TTL, id, jobId, queue, ...fields,
    );
  }

  app.on("issues.labeled", async (context) => {
    const { payload } = context;
    if (payload.label?.name !== trigger) return;
    if (payload.issue.pull_request || payload.issue.state === "closed") return;
    await enqueue(context, "fix", "");
  });

  app.on("issue_comment.created", async (context) => {
    const body = context.payload.comment?.body || "";
    const command = body.match(/^[ \t]*\/codex\b(.*)$/im);
    if (command) {
      await enqueue(context, "fix", command[1].trim());
      return;
    }
    const repo = context.payload.repository.full_name.toLowerCase();
    await redis.exists(`codexbot:target:${repo}#${context.payload.issue.number}`);
  });
};
