/**
 * Roles and permissions of the management API. This table is the single source of truth:
 * the server enforces it, the CLI prints it (`rampart token roles`) and docs/access-control.md
 * is checked against it by a test.
 */

export const ROLES = ['admin', 'operator', 'release-manager', 'auditor', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

export const PERMISSIONS = {
  'token:manage': 'Create, list and revoke API tokens.',
  'audit:read': 'Read, export and verify the audit log.',
  'device:read': 'Read devices, device models, hardware revisions and groups; run fleet queries.',
  'device:write': 'Create, update, import, delete devices and change their status.',
  'model:write': 'Create, update and delete device models and hardware revisions.',
  'group:write': 'Create, update and delete groups and change static group membership.',
  'metrics:read': 'Scrape Prometheus metrics at /metrics.',
  'certificate:read': 'List and show certificates, download chains, read the CA status.',
  'certificate:revoke': 'Revoke certificates (and their lineage).',
  'enrollment:manage': 'Create, list and revoke one-time enrollment tokens.',
  'ca:manage': 'Roll over CAs; export, remove and import the root key.',
  'policy:write': 'Create, update, delete, attach and detach gateway policies.',
  'provisioning:manage':
    'Register and revoke factory stations and manufacturing CAs, import batch manifests, manage enrollment policies, reference values and per-model attestation settings.',
  'release:read': 'Read the release repository: releases, TUF roles and metadata, signing requests.',
  'release:write':
    "Initialise a production release repository, upload releases, change TUF roles, keys and delegations, rotate online keys and the director's keys, cancel signing requests.",
  'release:sign': 'Hand in detached signatures for pending signing requests (M-of-N release approval).',
} as const;
export type Permission = keyof typeof PERMISSIONS;

export const ROLE_DESCRIPTIONS: Record<Role, string> = {
  admin: 'Everything, including token management.',
  operator: 'Runs the fleet day to day: devices, models, groups, enrollment, revocation, gateway policies.',
  'release-manager': 'Publishes releases and runs rollouts; reads the fleet.',
  auditor: 'Reads everything and the audit log; changes nothing.',
  viewer: 'Reads the fleet; no audit log, no changes.',
};

export const ROLE_PERMISSIONS: Record<Role, readonly Permission[]> = {
  admin: Object.keys(PERMISSIONS) as Permission[],
  operator: [
    'device:read',
    'device:write',
    'model:write',
    'group:write',
    'metrics:read',
    'certificate:read',
    'certificate:revoke',
    'enrollment:manage',
    'policy:write',
    'provisioning:manage',
    'release:read',
  ],
  'release-manager': [
    'device:read',
    'metrics:read',
    'certificate:read',
    'release:read',
    'release:write',
    'release:sign',
  ],
  auditor: ['device:read', 'audit:read', 'metrics:read', 'certificate:read', 'release:read'],
  viewer: ['device:read', 'certificate:read', 'release:read'],
};

export function roleAllows(role: Role, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role].includes(permission);
}

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

/** Renders the permission table as Markdown (used by docs/access-control.md and its consistency test). */
export function permissionTableMarkdown(): string {
  const header = `| Permission | ${ROLES.join(' | ')} | What it allows |`;
  const rule = `|---|${ROLES.map(() => ':-:').join('|')}|---|`;
  const rows = (Object.keys(PERMISSIONS) as Permission[]).map(
    (p) =>
      `| \`${p}\` | ${ROLES.map((r) => (roleAllows(r, p) ? '✓' : '')).join(' | ')} | ${PERMISSIONS[p]} |`,
  );
  return [header, rule, ...rows].join('\n');
}
