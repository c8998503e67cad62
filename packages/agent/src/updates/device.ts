import { join } from 'node:path';
import type { Logger } from '@rampart/shared/logging';
import type { AgentConfig } from '../config.js';
import { IdentityStore } from '../identity/store.js';
import type { TrustAnchor } from '../trust-anchor/trust-anchor.js';
import { FileRollbackCounter, TpmRollbackCounter, type RollbackCounter } from './counter.js';
import { Installer, KILL_AT_ENV, type ReceiptSigner } from './installer.js';

/**
 * The anti-rollback counter for this device: a TPM NV counter with the TPM trust anchor, else a file
 * under `<dataDir>/slots/` (weaker: a PKCS#11 token or the software anchor has no monotonic counter
 * the agent can use).
 */
export function rollbackCounterFor(config: AgentConfig): RollbackCounter {
  return config.trustAnchor === 'tpm'
    ? new TpmRollbackCounter(config.tpm.tcti, config.updates.tpmCounterIndex)
    : new FileRollbackCounter(join(config.dataDir, 'slots', 'counters.json'));
}

/** Receipts are signed by the identity key, for the device id of its certificate (or the configured one). */
export function receiptSignerFor(
  config: AgentConfig,
  anchor: TrustAnchor,
): () => Promise<ReceiptSigner | null> {
  return async () => {
    let deviceId: string | undefined;
    try {
      deviceId = new IdentityStore(config.dataDir).current()?.info.deviceId ?? undefined;
    } catch {
      deviceId = undefined;
    }
    deviceId ??= config.deviceId;
    const publicKey = await anchor.publicKey();
    if (!deviceId || !publicKey) return null;
    return { deviceId, publicKey, sign: (data) => anchor.sign(data) };
  };
}

/** The installer the configuration describes. */
export function installerFor(
  config: AgentConfig,
  anchor: TrustAnchor,
  log: Logger,
  env = process.env,
): Installer {
  return new Installer({
    dataDir: config.dataDir,
    counter: rollbackCounterFor(config),
    log,
    selfTest: {
      command: config.updates.selfTest.command,
      timeoutMs: config.updates.selfTest.timeoutSeconds * 1000,
    },
    maxBootAttempts: config.updates.maxBootAttempts,
    commitTimeoutMs: config.updates.commitTimeoutSeconds * 1000,
    hooksDir: config.updates.hooksDir,
    signer: receiptSignerFor(config, anchor),
    killAt: env[KILL_AT_ENV],
  });
}
