// bench.mjs -- the pg-workers benchmark's workload on DBOS Transact, for
// scale (docs/PERFORMANCE.md, "Many workers on PostgreSQL"): workflows of
// STEPS no-op steps, each step checkpointed by DBOS in the system database
// (TL_PG_URL, the private server of tests/pg/with-postgres.sh, with the
// server's synchronous_commit, on by default), run one after another
// (sequential) and 500 at once (concurrent).  Prints steps/s for each.
//
//   npm install && tests/pg/with-postgres.sh node bench/dbos/bench.mjs \
//       [--workflows N] [--steps S] [--concurrency C] [--rounds R]
import { DBOS } from '@dbos-inc/dbos-sdk';
import pg from 'pg';

const opt = { workflows: 200, steps: 10, concurrency: 500, rounds: 2 };
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt)) throw new Error(`bench.mjs: unknown option ${process.argv[i]}`);
  opt[k] = Number(process.argv[i + 1]);
}
const url = process.env.TL_PG_URL;
if (!url) throw new Error('bench.mjs: TL_PG_URL is not set (run it under tests/pg/with-postgres.sh)');

async function noop() {}
const step = DBOS.registerStep(noop, { name: 'noop' });
async function flow(steps) {
  for (let k = 0; k < steps; k++) await step();
  return steps;
}
const workflow = DBOS.registerWorkflow(flow, { name: 'flow' });

DBOS.setConfig({ name: 'tl-bench', systemDatabaseUrl: url, logLevel: 'warn' });
await DBOS.launch();

async function sequential() {
  const t0 = performance.now();
  for (let w = 0; w < opt.workflows; w++) await workflow(opt.steps);
  return (opt.workflows * opt.steps) / ((performance.now() - t0) / 1000);
}

async function concurrent() {
  const t0 = performance.now();
  const runs = [];
  for (let w = 0; w < opt.concurrency; w++) runs.push(workflow(opt.steps));
  await Promise.all(runs);
  return (opt.concurrency * opt.steps) / ((performance.now() - t0) / 1000);
}

const client = new pg.Client({ connectionString: url });
await client.connect();
const sync = (await client.query('SHOW synchronous_commit')).rows[0].synchronous_commit;
await client.end();
for (let r = 0; r < opt.rounds; r++) {
  const s = await sequential();
  const c = await concurrent();
  console.log(`figures: DBOS Transact 5.3.0, ${opt.steps} no-op steps per workflow` +
    `, synchronous_commit=${sync}` +
    `: sequential ${opt.workflows} workflows ${s.toFixed(0)} steps/s; ` +
    `${opt.concurrency} concurrent ${c.toFixed(0)} steps/s`);
}
await DBOS.shutdown();
