import { mkdirSync, writeFileSync } from 'node:fs';
import { fmt } from './stats.js';

export interface BenchResult {
  bench: string;
  dialect: string;
  metric: string;
  value: number;
  unit: string;
  /**
   * The target from the requirements, and whether the value meets it. An advisory target is
   * printed with met/MISSED like the others but does not make the run fail.
   */
  target?: { op: '>=' | '<='; value: number; advisory?: boolean };
  peer?: { name: string; value: number };
  notes?: string;
}

const results: BenchResult[] = [];

export function record(r: BenchResult): void {
  results.push(r);
  const ratio = r.peer
    ? ` | peer ${r.peer.name}: ${fmt(r.peer.value, r.unit === 's' || r.unit === '%' ? 2 : r.unit === 'ms' ? 1 : 0)} ${r.unit} | Rampart ÷ peer = ${fmt(r.value / r.peer.value, 2)}`
    : '';
  const target = r.target
    ? ` | target ${r.target.op} ${fmt(r.target.value)} ${r.unit}: ${meets(r) ? 'met' : 'MISSED'}${r.target.advisory ? ' (advisory)' : ''}`
    : '';
  process.stdout.write(
    `  ${r.bench} [${r.dialect}] ${r.metric}: ${fmt(r.value, r.unit === 's' || r.unit === '%' ? 2 : r.unit === 'ms' ? 1 : 0)} ${r.unit}${ratio}${target}${r.notes ? ` (${r.notes})` : ''}\n`,
  );
}

function meets(r: BenchResult): boolean {
  if (!r.target) return true;
  return r.target.op === '>=' ? r.value >= r.target.value : r.value <= r.target.value;
}

export function summary(outFile: string): boolean {
  process.stdout.write('\nSummary\n');
  process.stdout.write(
    '| bench | db | metric | value | peer | ratio (Rampart ÷ peer) | target |\n|---|---|---|---|---|---|---|\n',
  );
  for (const r of results) {
    const digits = r.unit === 's' || r.unit === '%' ? 2 : r.unit === 'ms' ? 1 : 0;
    process.stdout.write(
      `| ${r.bench} | ${r.dialect} | ${r.metric} | ${fmt(r.value, digits)} ${r.unit} | ${r.peer ? `${r.peer.name} ${fmt(r.peer.value, digits)} ${r.unit}` : '-'} | ${r.peer ? fmt(r.value / r.peer.value, 2) : '-'} | ${r.target ? `${r.target.op} ${fmt(r.target.value)} ${meets(r) ? 'met' : 'MISSED'}${r.target.advisory ? ' (advisory)' : ''}` : '-'} |\n`,
    );
  }
  mkdirSync(new URL('.', `file://${outFile}`).pathname, { recursive: true });
  writeFileSync(outFile, JSON.stringify({ when: new Date().toISOString(), results }, null, 2));
  process.stdout.write(`\nresults written to ${outFile}\n`);
  return results.every((r) => r.target?.advisory || meets(r));
}
