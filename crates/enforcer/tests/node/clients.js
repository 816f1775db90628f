// node-postgres (pg) through jitgate with no rules: a pool's bound-parameter
// set_config, an identity change refused at Bind, a DO block's notice, a
// syntax error's SQLSTATE and position, a sibling backend terminated, a user
// function. Run by crates/enforcer/tests/node.rs with a connection string.
const assert = require('node:assert/strict');
const { Client, Pool } = require('pg');

async function main() {
  const dsn = process.argv[2];
  const pool = new Pool({ connectionString: dsn, max: 2 });
  const set = await pool.query('SELECT set_config($1, $2, false) AS v',
    ['default_transaction_isolation', 'serializable']);
  assert.equal(set.rows[0].v, 'serializable');
  await assert.rejects(
    pool.query('SELECT set_config($1, $2, false)', ['role', 'app_write']),
    (e) => e.code === '42501' && /identity/.test(e.message));

  const c = new Client({ connectionString: dsn });
  await c.connect();
  const notices = [];
  c.on('notice', (n) => notices.push(n.message));
  await c.query("DO $$ BEGIN RAISE NOTICE 'hello from node'; END $$");
  assert.ok(notices.includes('hello from node'), JSON.stringify(notices));

  await assert.rejects(c.query('SELECT 1 FROM FROM orders'),
    (e) => e.code === '42601' && e.position === '15');

  const sibling = new Client({ connectionString: dsn });
  sibling.on('error', () => {});
  await sibling.connect();
  const pid = (await sibling.query('SELECT pg_backend_pid() AS p')).rows[0].p;
  const t = await c.query('SELECT pg_terminate_backend($1) AS ok', [pid]);
  assert.equal(t.rows[0].ok, true);

  const b = await c.query('SELECT bump($1::int) AS v', [41]);
  assert.equal(b.rows[0].v, 42);

  await c.end();
  await pool.end();
  console.log('node-postgres ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
