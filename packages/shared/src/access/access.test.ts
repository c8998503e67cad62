import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PERMISSIONS, ROLES, ROLE_PERMISSIONS, permissionTableMarkdown, roleAllows } from './index.js';

/** Rows of a Markdown permission table as arrays of trimmed cells (alignment-insensitive). */
function rows(markdown: string): string[][] {
  return markdown
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((l) =>
      l
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
}

describe('roles and permissions', () => {
  it('admin holds every permission and viewer only reads', () => {
    for (const p of Object.keys(PERMISSIONS) as (keyof typeof PERMISSIONS)[])
      expect(roleAllows('admin', p)).toBe(true);
    expect(ROLE_PERMISSIONS.viewer.every((p) => p.endsWith(':read'))).toBe(true);
    expect(roleAllows('viewer', 'certificate:revoke')).toBe(false);
    expect(roleAllows('auditor', 'ca:manage')).toBe(false);
    expect(roleAllows('auditor', 'device:write')).toBe(false);
    expect(roleAllows('operator', 'token:manage')).toBe(false);
  });

  it('docs/access-control.md shows exactly the enforced table', () => {
    const doc = readFileSync(new URL('../../../../docs/access-control.md', import.meta.url), 'utf8');
    const section =
      doc.split('<!-- permission-table:start -->')[1]?.split('<!-- permission-table:end -->')[0] ?? '';
    expect(rows(section)).toEqual(rows(permissionTableMarkdown()));
    expect(rows(section)).toHaveLength(Object.keys(PERMISSIONS).length);
    for (const r of ROLES) expect(doc).toContain(`\`${r}\``);
  });
});
