import { TpmFormatError, parseTpmSignature, parseTpmsAttest } from '@rampart/shared/attestation';
import { AgentError } from '../errors.js';
import type { TpmConnection } from './tpm-tools.js';

/**
 * The raw TPM 2.0 commands (TCG TPM 2.0 Library, Part 3) the agent marshals itself, for what
 * tpm2-tools cannot do: `tpm2_certify` (5.4, as Debian ships it) has no option for the qualifying
 * data and always sends 00 ff 55 aa, so a certification could not be bound to a verifier's nonce.
 * Every object here has an empty authorization value, so each session is a password session with
 * an empty password.
 */

const TPM_ST_SESSIONS = 0x8002;
const TPM_CC_CERTIFY = 0x00000148;
const TPM_CC_LOAD = 0x00000157;
const TPM_RS_PW = 0x40000009;
const TPM_ALG_ECDSA = 0x0018;
const TPM_ALG_SHA256 = 0x000b;

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** TPMS_AUTH_COMMAND: the password session, no nonce, no attributes, an empty password. */
const PASSWORD_SESSION = Buffer.concat([u32(TPM_RS_PW), u16(0), Buffer.from([0]), u16(0)]);

/**
 * A command with sessions: header, handles, authorization area (one password session per handle),
 * parameters.
 */
function marshal(code: number, handles: readonly number[], parameters: readonly Uint8Array[]): Buffer {
  const auth = Buffer.concat(handles.map(() => PASSWORD_SESSION));
  const body = Buffer.concat([...handles.map(u32), u32(auth.length), auth, ...parameters]);
  return Buffer.concat([u16(TPM_ST_SESSIONS), u32(10 + body.length), u32(code), body]);
}

/** The response's parameter area, after checking its header and response code. */
function parameters(response: Buffer, command: string, handleCount: number, tcti: string): Buffer {
  const rc = response.readUInt32BE(6);
  if (rc !== 0)
    throw new AgentError(
      'TRUST_ANCHOR',
      `${command} failed on the TPM at ${tcti}: response code 0x${rc.toString(16).padStart(3, '0')} ` +
        '(tpm2_rc_decode explains it)',
    );
  const start = 10 + 4 * handleCount;
  if (response.readUInt16BE(0) !== TPM_ST_SESSIONS || response.length < start + 4)
    throw new AgentError('TRUST_ANCHOR', `${command} on the TPM at ${tcti}: the response is cut short`);
  const size = response.readUInt32BE(start);
  if (start + 4 + size > response.length)
    throw new AgentError('TRUST_ANCHOR', `${command} on the TPM at ${tcti}: the response is cut short`);
  return response.subarray(start + 4, start + 4 + size);
}

/**
 * TPM2_Load: load a key from its blobs (TPM2B_PUBLIC and TPM2B_PRIVATE, as tpm2_create writes them)
 * under `parent`; resolves with its transient handle, valid for this connection.
 */
export async function loadKey(
  tpm: TpmConnection,
  tcti: string,
  parent: number,
  publicBlob: Uint8Array,
  privateBlob: Uint8Array,
): Promise<number> {
  const response = await tpm.send(marshal(TPM_CC_LOAD, [parent], [privateBlob, publicBlob]));
  parameters(response, 'TPM2_Load', 1, tcti);
  return response.readUInt32BE(10);
}

/**
 * TPM2_Certify: the key at `signer` signs (ECDSA, SHA-256) that the object at `object` is loaded
 * in this TPM, with `qualifyingData` in the attestation. Resolves with the TPMS_ATTEST and the
 * TPMT_SIGNATURE, as `tpm2_certify -o` and `-s` (tss format) write them.
 */
export async function certify(
  tpm: TpmConnection,
  tcti: string,
  object: number,
  signer: number,
  qualifyingData: Uint8Array,
): Promise<{ attest: Buffer; signature: Buffer }> {
  const response = await tpm.send(
    marshal(
      TPM_CC_CERTIFY,
      [object, signer],
      [u16(qualifyingData.length), qualifyingData, u16(TPM_ALG_ECDSA), u16(TPM_ALG_SHA256)],
    ),
  );
  const out = parameters(response, 'TPM2_Certify', 0, tcti);
  // certifyInfo (TPM2B_ATTEST), then the signature (TPMT_SIGNATURE) filling the rest.
  const size = out.length >= 2 ? out.readUInt16BE(0) : Infinity;
  if (2 + size > out.length)
    throw new AgentError('TRUST_ANCHOR', `TPM2_Certify on the TPM at ${tcti}: the response is cut short`);
  const attest = Buffer.from(out.subarray(2, 2 + size));
  const signature = Buffer.from(out.subarray(2 + size));
  try {
    parseTpmsAttest(attest);
    parseTpmSignature(signature);
  } catch (err) {
    if (err instanceof TpmFormatError)
      throw new AgentError('TRUST_ANCHOR', `TPM2_Certify on the TPM at ${tcti}: ${err.message}`);
    throw err;
  }
  return { attest, signature };
}
