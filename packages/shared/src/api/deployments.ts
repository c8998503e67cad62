import { Type, type Static } from '@sinclair/typebox';
import { StringEnum } from '../schema/index.js';

export const DEPLOYMENT_STATES = ['running', 'paused', 'completed', 'aborted', 'cancelled'] as const;
export type DeploymentState = (typeof DEPLOYMENT_STATES)[number];

/** Where a device stands in one deployment. */
export const DEPLOYMENT_DEVICE_STATES = [
  /** In the target, not yet handed to the director. */
  'pending',
  /** Told to install the release; waiting for its signed receipt. */
  'assigned',
  /** Its signed "booted and self-test passed" receipt arrived in time. */
  'succeeded',
  /** It reported a failure. */
  'failed',
  /** It rolled back to the previous slot. */
  'rolled-back',
  /** No receipt arrived within the receipt time-out. */
  'timed-out',
  /** A higher-priority deployment took the device over. */
  'superseded',
  /** The deployment was cancelled or aborted before the device was done. */
  'cancelled',
] as const;
export type DeploymentDeviceState = (typeof DEPLOYMENT_DEVICE_STATES)[number];

const Percent = Type.String({ pattern: '^([0-9]{1,2}(\\.[0-9]+)?|100)%$' });

export const CreateDeploymentBody = Type.Object(
  {
    release: Type.String({
      minLength: 1,
      maxLength: 200,
      description: 'Target path of a published release.',
    }),
    target: Type.Union(
      [
        Type.Object({ group: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false }),
        Type.Object(
          { query: Type.String({ minLength: 1, maxLength: 4096 }) },
          { additionalProperties: false },
        ),
        Type.Object(
          {
            devices: Type.Array(Type.String({ minLength: 1, maxLength: 255 }), {
              minItems: 1,
              maxItems: 10_000,
            }),
          },
          { additionalProperties: false },
        ),
      ],
      { description: 'A group id, a fleet query, or an explicit list of device ids.' },
    ),
    canary: Type.Optional(
      Type.Union([Type.Integer({ minimum: 0, maximum: 1_000_000 }), Percent], {
        description:
          'Devices in the canary phase: a count, or a percentage of the target (e.g. `5%`). Default 0.',
      }),
    ),
    ratePerMinute: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 1_000_000,
        description: 'Devices assigned per minute after the canary. Default 10.',
      }),
    ),
    rateGrowth: Type.Optional(
      Type.Number({
        minimum: 1,
        maximum: 100,
        description: 'Factor the rate grows by at every new phase after the canary. Default 1 (one phase).',
      }),
    ),
    phaseMinutes: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 100_000,
        description: 'Length of each rate phase in minutes when `rateGrowth` is above 1. Default 10.',
      }),
    ),
    window: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 500,
        description:
          'Maintenance windows: `DAYS HH:MM-HH:MM ZONE`, several separated by `;`, e.g. `Mon-Fri 01:00-05:00 Europe/Berlin`.',
      }),
    ),
    abortAtPercent: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 100,
        description:
          'Abort when this percentage of finished devices failed (rolled back, failed or timed out).',
      }),
    ),
    minSample: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000,
        description: 'Finished devices needed before the abort rule applies. Default 5.',
      }),
    ),
    receiptTimeout: Type.Optional(
      Type.String({
        pattern: '^[0-9]+(ms|s|m|h|d)$',
        description: 'Time a device has to send its signed receipt after assignment. Default `30m`.',
      }),
    ),
    canaryWaitTimeout: Type.Optional(
      Type.String({
        pattern: '^[0-9]+(s|m|h|d)$',
        description:
          'How long the canary waits for a free device when one of its devices is held by (or taken over by) a ' +
          'higher-priority deployment and no other device of the target can replace it; then the deployment ' +
          'pauses itself with the reason. `0s` pauses at once. At most `7d`. Default `1h`.',
      }),
    ),
    continuous: Type.Optional(
      Type.Boolean({ description: 'Keep running: devices entering the target later get the release too.' }),
    ),
    priority: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 1000,
        description:
          'Higher takes devices over from lower-priority deployments; equal overlapping is refused. Default 0.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateDeploymentBody = Static<typeof CreateDeploymentBody>;

export const DeploymentCounts = Type.Object({
  total: Type.Integer(),
  pending: Type.Integer(),
  assigned: Type.Integer(),
  succeeded: Type.Integer(),
  failed: Type.Integer({ description: 'Failed, rolled back or timed out.' }),
  other: Type.Integer({ description: 'Superseded or cancelled.' }),
});
export type DeploymentCounts = Static<typeof DeploymentCounts>;

export const DeploymentPhaseView = Type.Object({
  index: Type.Integer({ description: '0 is the canary; 1 and up are rate phases.' }),
  name: Type.String(),
  ratePerMinute: Type.Union([Type.Number(), Type.Null()]),
  counts: DeploymentCounts,
});
export type DeploymentPhaseView = Static<typeof DeploymentPhaseView>;

export const DeploymentView = Type.Object({
  id: Type.Integer(),
  release: Type.String(),
  target: Type.Object({
    kind: StringEnum(['group', 'query', 'devices'] as const),
    value: Type.String({ description: 'Group id, query, or comma-separated device ids.' }),
  }),
  state: StringEnum(DEPLOYMENT_STATES),
  reason: Type.Union([Type.String(), Type.Null()], {
    description: 'Why it stopped (abort rule, cancel) or paused itself (a canary short of devices).',
  }),
  canary: Type.Union([Type.Integer(), Type.String()]),
  canarySize: Type.Integer({ description: 'Devices chosen for the canary.' }),
  ratePerMinute: Type.Number(),
  rateGrowth: Type.Number(),
  phaseMinutes: Type.Integer(),
  window: Type.Union([Type.String(), Type.Null()]),
  windowOpen: Type.Boolean(),
  abortAtPercent: Type.Union([Type.Number(), Type.Null()]),
  minSample: Type.Integer(),
  receiptTimeoutMs: Type.Integer(),
  canaryWaitTimeoutMs: Type.Integer({
    description: 'How long a canary short of devices waits for a free one before the deployment pauses.',
  }),
  canaryWaitingSince: Type.Union([Type.String(), Type.Null()], {
    description:
      'Since when the canary has been short of devices (held by another deployment, none free to replace them).',
  }),
  continuous: Type.Boolean(),
  priority: Type.Integer(),
  phase: Type.Integer({ description: 'Current phase (0: canary).' }),
  counts: DeploymentCounts,
  phases: Type.Array(DeploymentPhaseView),
  createdAt: Type.String(),
  createdBy: Type.String(),
  updatedAt: Type.String(),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
});
export type DeploymentView = Static<typeof DeploymentView>;

export const DeploymentDeviceView = Type.Object({
  deviceId: Type.String(),
  state: StringEnum(DEPLOYMENT_DEVICE_STATES),
  phase: Type.Union([Type.Integer(), Type.Null()]),
  assignedAt: Type.Union([Type.String(), Type.Null()]),
  finishedAt: Type.Union([Type.String(), Type.Null()]),
  receiptId: Type.Union([Type.String(), Type.Null()]),
});
export type DeploymentDeviceView = Static<typeof DeploymentDeviceView>;

export const DeploymentDetail = Type.Object({
  deployment: DeploymentView,
  devices: Type.Array(DeploymentDeviceView),
});
export type DeploymentDetail = Static<typeof DeploymentDetail>;

export const DeploymentList = Type.Object({ items: Type.Array(DeploymentView) });
export type DeploymentList = Static<typeof DeploymentList>;

export const DeploymentEvent = Type.Object({
  deploymentId: Type.Integer(),
  release: Type.String(),
  deviceId: Type.String(),
  event: Type.String({
    description:
      'assigned, succeeded, failed, rolled-back, timed-out, superseded, cancelled, late-receipt, ' +
      'canary-replaced (another device took its place in the canary), canary-short (no device could; the ' +
      'deployment paused)',
  }),
  at: Type.String(),
  detail: Type.Union([Type.String(), Type.Null()]),
});
export type DeploymentEvent = Static<typeof DeploymentEvent>;

export const DeviceDeploymentHistory = Type.Object({
  deviceId: Type.String(),
  items: Type.Array(DeploymentEvent),
});
export type DeviceDeploymentHistory = Static<typeof DeviceDeploymentHistory>;
