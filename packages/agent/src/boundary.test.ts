import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('..', import.meta.url).pathname;
const FORBIDDEN = [/^@rampart\/(server|cli|console)/, /^(pg|better-sqlite3|kysely|fastify|@fastify\/)/];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('device agent package boundary', () => {
  it('declares no dependency on the server, the CLI, the console or a database driver', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    const deps = Object.keys(pkg.dependencies ?? {});
    expect(deps).toContain('@rampart/shared');
    for (const d of deps) for (const f of FORBIDDEN) expect(d, `agent depends on ${d}`).not.toMatch(f);
  });

  it('imports nothing from the server side in its sources', () => {
    const offenders: string[] = [];
    for (const file of sourceFiles(join(root, 'src'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g)) {
        const spec = m[1] ?? m[2]!;
        if (FORBIDDEN.some((f) => f.test(spec)) || spec.includes('/server/') || spec.includes('/cli/'))
          offenders.push(`${file}: ${spec}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
