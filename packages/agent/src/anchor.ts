import { join } from 'node:path';
import type { AgentConfig } from './config.js';
import { SoftwareTrustAnchor } from './trust-anchor/software.js';
import { TpmTrustAnchor } from './trust-anchor/tpm.js';
import type { TrustAnchor } from './trust-anchor/trust-anchor.js';

/** The trust anchor the configuration names. */
export function trustAnchorFor(config: AgentConfig): TrustAnchor {
  switch (config.trustAnchor) {
    case 'software':
      return new SoftwareTrustAnchor(join(config.dataDir, 'identity', 'device-key.pem'));
    case 'tpm':
      return new TpmTrustAnchor({
        dir: join(config.dataDir, 'identity', 'tpm'),
        tcti: config.tpm.tcti,
        parentHandle: config.tpm.parentHandle,
      });
  }
}
