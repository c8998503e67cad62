import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchApiWrites } from './api-writes.js';
import { benchAuditVerify } from './audit-verify.js';
import { benchCa } from './ca.js';
import { benchFleetQuery } from './fleet-query.js';
import { benchGateway } from './gateway.js';
import { benchImport } from './import.js';
import { benchOta } from './ota.js';
import { benchProvision } from './provision.js';
import { stopPostgres, type Dialect } from './lib/databases.js';
import { summary } from './lib/report.js';

const BENCHES = [
  'import',
  'api-writes',
  'fleet-query',
  'audit-verify',
  'ca',
  'gateway',
  'provision',
  'ota',
] as const;
type Bench = (typeof BENCHES)[number];
/** Benchmarks that measure one database only (the CA's, the gateway's and provisioning run on the embedded default, SQLite). */
const DIALECTS_OF: Partial<Record<Bench, Dialect[]>> = {
  ca: ['sqlite'],
  gateway: ['sqlite'],
  provision: ['sqlite'],
  ota: ['sqlite'],
};

const { values } = parseArgs({
  options: {
    only: { type: 'string', default: BENCHES.join(',') },
    dialect: { type: 'string', default: 'sqlite,postgres' },
    quick: { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  process.stdout
    .write(`npm run bench -- [--only ${BENCHES.join(',')}] [--dialect sqlite,postgres] [--quick] [--cpu-prof DIR]

Runs Rampart's benchmarks on this machine, each beside its peer (the raw driver, a bare Fastify
server, openssl, Mosquitto), and prints the figures, the ratio to the peer and whether each target
is met. --quick shrinks the data sets (1,000,000 → 100,000; ca: 3,000 → 600 enrollments; gateway:
2,000 idle devices instead of 10,000 and 50,000, 1,000-device connect storms, 5 s of publishing;
provision: 400 devices instead of 2,000; ota: 1,000 devices instead of 10,000) for a fast look; targets are stated for the full size.
ca, gateway and provision run on SQLite only; ca with the file and the PKCS#11 key store, gateway
beside Mosquitto 2.0 with the same device certificates, provision with the software trust anchor
and then with swtpm (beside the published limits of managed provisioning services), ota with
devices that verify everything as the agent does, beside a bare static HTTP download of the image.
--cpu-prof DIR writes a V8 CPU profile of each Rampart server the ca benchmark starts to
DIR/<key store>/, and of the gateway and provision benchmarks' server to DIR.
PostgreSQL: RAMPART_BENCH_DATABASE_URL, otherwise a throwaway server with durable settings.

Examples:
  npm run bench
  npm run bench -- --only fleet-query --dialect postgres
  npm run bench:ca -- --quick
  npm run bench:gateway -- --quick
  npm run bench:gateway -- --cpu-prof /tmp/gateway-prof
  npm run bench:provision -- --quick
  npm run bench:ota -- --quick
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
  ca: () => benchCa({ quick: values.quick!, cpuProfDir: values['cpu-prof'] }),
  gateway: () => benchGateway({ quick: values.quick!, cpuProfDir: values['cpu-prof'] }),
  provision: () => benchProvision({ quick: values.quick!, cpuProfDir: values['cpu-prof'] }),
  ota: () => benchOta({ quick: values.quick!, cpuProfDir: values['cpu-prof'] }),
};

process.stdout.write(
  `Rampart benchmarks — ${new Date().toISOString()} — node ${process.version}, ${(await import('node:os')).cpus().length} cores\n`,
);
let ok: boolean;
try {
  for (const bench of BENCHES.filter((b) => only.includes(b))) {
    for (const dialect of dialects.filter((d) => DIALECTS_OF[bench]?.includes(d) ?? true)) {
      process.stdout.write(`\n${bench} on ${dialect}\n`);
      await runners[bench](dialect);
    }
  }
} finally {
  stopPostgres();
  ok = summary(join(fileURLToPath(new URL('../../../', import.meta.url)), '.bench', 'results.json'));
}
process.exit(ok ? 0 : 1);
