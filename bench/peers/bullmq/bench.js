// The BullMQ peer of `recur bench bullmq`: N delayed jobs due at the same instant, a Worker
// with a no-op handler, jobs per second from the moment they are due until all completed.
//
//   node bench.js --redis 127.0.0.1:PORT --jobs 100000 [--concurrency 500] [--lead-ms 3000]
//                 [--remove-on-complete]
//
// --remove-on-complete: each job is removed once completed (`removeOnComplete: true`, BullMQ's
// fastest configuration); without it completed jobs are kept (BullMQ's default).
//
// Prints one JSON line on stdout:
//   {"jobs":N,"completed":N,"elapsed_s":..,"jobs_per_s":..,"add_s":..,"late_ms":..,
//    "node_cpu_us_per_job":..,"redis_cpu_us_per_job":..,...}
// Use a private, empty redis-server: the queue is obliterated first.
'use strict';

const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function main() {
  const [host, port] = arg('redis', '127.0.0.1:6380').split(':');
  const jobs = Number(arg('jobs', '100000'));
  const concurrency = Number(arg('concurrency', '500'));
  const chunk = Number(arg('chunk', '1000'));
  const removeOnComplete = process.argv.includes('--remove-on-complete');
  // Adding is estimated at well over 10k jobs/s; the due instant leaves room for it.
  const leadMs = Number(arg('lead-ms', String(3000 + Math.ceil(jobs / 10))));
  const connection = { host, port: Number(port), maxRetriesPerRequest: null };

  const queue = new Queue('bench', { connection });
  await queue.waitUntilReady();
  await queue.obliterate({ force: true });

  const addStart = Date.now();
  const due = addStart + leadMs;
  for (let i = 0; i < jobs; i += chunk) {
    const batch = [];
    for (let j = i; j < Math.min(jobs, i + chunk); j++) {
      batch.push({ name: 'cycle', data: { order: `o${j}` }, opts: { delay: Math.max(0, due - Date.now()), jobId: `o${j}`, removeOnComplete } });
    }
    await queue.addBulk(batch);
  }
  const addEnd = Date.now();

  // CPU spent processing, from the worker's start to the last completion: the Node process's
  // (every thread) and Redis's (INFO cpu, every thread), per job. Independent of how busy the
  // machine is, unlike jobs per second.
  const probe = new IORedis(connection);
  const redisCpu = async () => {
    const info = await probe.info('cpu');
    const field = (k) => Number((info.match(new RegExp(`${k}:([0-9.]+)`)) || [0, 0])[1]);
    return field('used_cpu_sys') + field('used_cpu_user');
  };
  const redisCpuBefore = await redisCpu();
  const nodeCpuBefore = process.cpuUsage();

  let completed = 0;
  let failed = 0;
  let last = 0;
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  const worker = new Worker('bench', async () => {}, {
    connection: new IORedis(connection),
    concurrency,
  });
  worker.on('completed', () => {
    completed += 1;
    if (completed + failed === jobs) { last = Date.now(); resolveDone(); }
  });
  worker.on('failed', () => {
    failed += 1;
    if (completed + failed === jobs) { last = Date.now(); resolveDone(); }
  });
  let first = 0;
  worker.once('active', () => { first = Date.now(); });
  await worker.waitUntilReady();
  const limit = setTimeout(() => resolveDone(), Number(arg('timeout-ms', '1800000')));
  await done;
  clearTimeout(limit);
  if (!last) last = Date.now();
  const nodeCpu = process.cpuUsage(nodeCpuBefore);
  const redisCpuAfter = await redisCpu();
  await probe.quit();
  const elapsed = (last - due) / 1000;
  const line = {
    jobs,
    completed,
    failed,
    concurrency,
    remove_on_complete: removeOnComplete,
    elapsed_s: Number(elapsed.toFixed(3)),
    jobs_per_s: Math.round(completed / Math.max(elapsed, 1e-9)),
    add_s: Number(((addEnd - addStart) / 1000).toFixed(3)),
    // > 0: adding took longer than the lead, so the jobs were due before they were all added.
    late_ms: Math.max(0, addEnd - due),
    first_active_after_due_ms: first ? first - due : null,
    node_cpu_us_per_job: Number(((nodeCpu.user + nodeCpu.system) / Math.max(completed, 1)).toFixed(1)),
    redis_cpu_us_per_job: Number((((redisCpuAfter - redisCpuBefore) * 1e6) / Math.max(completed, 1)).toFixed(1)),
    bullmq: require('bullmq/package.json').version,
  };
  await worker.close();
  await queue.close();
  process.stdout.write(`${JSON.stringify(line)}\n`);
  process.exit(completed === jobs ? 0 : 1);
}

main().catch((e) => {
  process.stderr.write(`bullmq peer failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
