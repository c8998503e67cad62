import { join } from 'node:path';
import type { AgentConfig } from './config.js';
import { AgentError } from './errors.js';
import { Pkcs11TrustAnchor } from './trust-anchor/pkcs11.js';
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
    case 'pkcs11': {
      // loadAgentConfig refuses a pkcs11 configuration without these; a hand-built one may lack them.
      const { module, tokenLabel, pin, keyLabel } = config.pkcs11;
      if (module === undefined || tokenLabel === undefined || pin === undefined)
        throw new AgentError(
          'CONFIG_INVALID',
          'trustAnchor pkcs11 needs pkcs11.module, pkcs11.tokenLabel and pkcs11.pin (RAMPART_AGENT_PKCS11_MODULE, RAMPART_AGENT_PKCS11_TOKEN_LABEL, RAMPART_AGENT_PKCS11_PIN)',
        );
      return new Pkcs11TrustAnchor({ module, tokenLabel, pin, keyLabel });
    }
  }
}
