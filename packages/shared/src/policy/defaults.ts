import type { PolicyDocument } from './schema.js';

/**
 * The policy every device gets unless told otherwise: connect with its own id as client id, and
 * publish, subscribe and receive in its own namespaces, `devices/<id>/…` and `$rampart/devices/<id>/…`.
 */
export const DEFAULT_POLICY: PolicyDocument = {
  version: '2026-11',
  statements: [
    { sid: 'connect-as-self', effect: 'allow', actions: ['connect'], resources: ['${device.id}'] },
    {
      sid: 'own-topics',
      effect: 'allow',
      actions: ['publish', 'subscribe', 'receive'],
      resources: ['devices/${device.id}/#', '$rampart/devices/${device.id}/#'],
    },
  ],
};

/**
 * The topics a quarantined device keeps (for publish, subscribe and receive): its update and report
 * channels, so that it can be remediated. Connect stays as the policies decide. Everything else is
 * denied whatever the policies allow; deny statements still apply inside these topics.
 */
export const QUARANTINE_TOPICS: readonly string[] = [
  '$rampart/devices/${device.id}/updates/#',
  '$rampart/devices/${device.id}/reports/#',
];
