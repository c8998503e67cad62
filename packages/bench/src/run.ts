import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchApiWrites } from './api-writes.js';
import { benchAuditVerify } from './audit-verify.js';
import { benchFleetQuery } from './fleet-query.js';
import { benchImport } from './import.js';
import { stopPostgres, type Dialect } from './lib/databases.js';
import { summary } from './lib/report.js';

const BENCHES = ['import', 'api-writes', 'fleet-query', 'audit-verify'] as const;
type Bench = (typeof BENCHES)[number];

const { values } = parseArgs({
  options: {
    only: { type: 'string', default: BENCHES.join(',') },
    dialect: { type: 'string', default: 'sqlite,postgres' },
    quick: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  process.stdout.write(`npm run bench -- [--only ${BENCHES.join(',')}] [--dialect sqlite,postgres] [--quick]

Runs Rampart's benchmarks on this machine, each beside its peer (the raw driver, a bare Fastify
server, openssl), and prints the figures, the ratio to the peer and whether each target is met.
--quick shrinks the data sets (1,000,000 → 100,000) for a fast look; targets are stated for the full size.
PostgreSQL: RAMPART_BENCH_DATABASE_URL, otherwise a throwaway server with durable settings.

Examples:
  npm run bench
  npm run bench -- --only fleet-query --dialect postgres
`);
  process.exit(0);
}

const only = values.only!.split(',') as Bench[];
const dialects = values.dialect!.split(',') as Dialect[];
const big = values.quick ? 100_000 : 1_000_000;

const runners: Record<Bench, (d: Dialect) => Promise<void>> = {
  import: (d) => benchImport(d),
  'api-writes': (d) => benchApiWrites(d),
  'fleet-query': (d) => benchFleetQuery(d, big),
  'audit-verify': (d) => benchAuditVerify(d, big),
};

process.stdout.write(
  `Rampart benchmarks — ${new Date().toISOString()} — node ${process.version}, ${(await import('node:os')).cpus().length} cores\n`,
);
let ok: boolean;
try {
  for (const bench of BENCHES.filter((b) => only.includes(b))) {
    for (const dialect of dialects) {
      process.stdout.write(`\n${bench} on ${dialect}\n`);
      await runners[bench](dialect);
    }
  }
} finally {
  stopPostgres();
  ok = summary(join(fileURLToPath(new URL('../../../', import.meta.url)), '.bench', 'results.json'));
}
process.exit(ok ? 0 : 1);
