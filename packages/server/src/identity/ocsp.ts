import { createHash } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import type { Extension } from '@peculiar/asn1-x509';
import { CRLReason } from '@peculiar/asn1-x509';
import type { CertID } from '@peculiar/asn1-ocsp';
import {
  CertStatus,
  KeyHash,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  ResponderID,
  ResponseData,
  RevokedInfo,
  SingleResponse,
} from '@peculiar/asn1-ocsp';
import { OID, REVOCATION_REASONS, der, serialFromBytes, subjectPublicKeyBits } from '@rampart/shared/pki';
import type { Logger } from '@rampart/shared/logging';
import type { PlatformKey } from '../keystore/index.js';
import type { Storage } from '../storage/index.js';
import type { CaRecord, CertificateAuthorities } from './authorities.js';
import type { CertificateRegistry } from './certificates.js';
import { keyIdentifierOf, signatureAlgorithmDer } from './x509.js';

/**
 * OCSP responder (RFC 6960) in the lightweight profile (RFC 9919): responses are signed by a
 * delegated OCSP-signing certificate per CA, identify the responder by key, and carry
 * thisUpdate/nextUpdate. Answers to requests without a nonce are pre-signed and reused until half
 * of their validity has passed, so the common case costs a map lookup; a request with a nonce
 * (RFC 9654) gets a freshly signed answer that echoes it.
 */
export interface OcspSigner {
  key: PlatformKey;
  certificateDer: Buffer;
}

export type OcspStatus = 'good' | 'revoked' | 'unknown';

interface CachedResponse {
  der: Buffer;
  status: OcspStatus;
  thisUpdate: Date;
  nextUpdate: Date;
  refreshAt: number;
}

const HASHES: Record<string, string> = {
  [OID.sha1]: 'sha1',
  [OID.sha256]: 'sha256',
  [OID.sha384]: 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** Largest number of pre-signed responses kept; unknown serials cannot grow memory without bound. */
const CACHE_LIMIT = 200_000;
const MAX_NONCE = 128;

export interface OcspAnswer {
  der: Buffer;
  /** For HTTP caching of GET responses; absent for error statuses and nonce-bound answers. */
  cache?: { thisUpdate: Date; nextUpdate: Date; etag: string };
  statuses: OcspStatus[];
}

function statusResponse(status: OCSPResponseStatus): Buffer {
  return Buffer.from(AsnConvert.serialize(new OCSPResponse({ responseStatus: status })));
}

export class OcspResponder {
  private readonly cache = new Map<string, CachedResponse>();
  /** `hashOid:nameHash:keyHash` → CA id. */
  private issuerIndex = new Map<string, string>();

  constructor(
    private readonly storage: Storage,
    private readonly authorities: CertificateAuthorities,
    private readonly registry: CertificateRegistry,
    private readonly signerFor: (ca: CaRecord) => Promise<OcspSigner>,
    private readonly validityMinutes: number,
    private readonly logger?: Logger,
  ) {
    this.reindex();
  }

  /** Rebuild the issuer lookup after the hierarchy changed. */
  reindex(): void {
    const index = new Map<string, string>();
    for (const ca of this.authorities.served()) {
      if (ca.kind === 'root') continue;
      const nameDer = Buffer.from(AsnConvert.serialize(ca.name));
      // issuerKeyHash hashes the subjectPublicKey BIT STRING value (RFC 6960 §4.1.1).
      const keyBits = subjectPublicKeyBits(ca.spkiDer);
      for (const [oid, alg] of Object.entries(HASHES)) {
        const n = createHash(alg).update(nameDer).digest('hex');
        const k = createHash(alg).update(keyBits).digest('hex');
        index.set(`${oid}:${n}:${k}`, ca.id);
      }
    }
    this.issuerIndex = index;
  }

  /** Forget pre-signed answers for these serials (they were revoked). */
  invalidate(certificates: Iterable<{ serial: string; issuerId: string }>): void {
    for (const c of certificates)
      for (const oid of Object.keys(HASHES)) this.cache.delete(`${oid}:${c.issuerId}:${c.serial}`);
  }

  /** Forget everything (the OCSP signer or the hierarchy changed). */
  clear(): void {
    this.cache.clear();
  }

  async respond(requestDer: Uint8Array): Promise<OcspAnswer> {
    let request: OCSPRequest;
    try {
      request = AsnConvert.parse(requestDer, OCSPRequest);
    } catch {
      return { der: statusResponse(OCSPResponseStatus.malformedRequest), statuses: [] };
    }
    const list = request.tbsRequest.requestList;
    if (list.length === 0) return { der: statusResponse(OCSPResponseStatus.malformedRequest), statuses: [] };
    const nonceExt = request.tbsRequest.requestExtensions?.find((e) => e.extnID === OID.ocspNonce);
    if (nonceExt) {
      const len = nonceLength(nonceExt);
      if (len < 1 || len > MAX_NONCE)
        return { der: statusResponse(OCSPResponseStatus.malformedRequest), statuses: [] };
    }

    const targets: { certId: CertID; caId: string; serial: string; hashOid: string }[] = [];
    for (const r of list) {
      const id = r.reqCert;
      const hashOid = id.hashAlgorithm.algorithm;
      const caId = this.issuerIndex.get(
        `${hashOid}:${Buffer.from(id.issuerNameHash.buffer).toString('hex')}:${Buffer.from(id.issuerKeyHash.buffer).toString('hex')}`,
      );
      // RFC 9919 §2.2.3: a responder that cannot answer for the issuer says "unauthorized".
      if (!caId) return { der: statusResponse(OCSPResponseStatus.unauthorized), statuses: [] };
      targets.push({ certId: id, caId, serial: serialFromBytes(id.serialNumber), hashOid });
    }

    // The lightweight common case: one certificate, no nonce → a pre-signed answer.
    if (targets.length === 1 && !nonceExt) {
      const t = targets[0]!;
      const key = `${t.hashOid}:${t.caId}:${t.serial}`;
      const now = Date.now();
      const hit = this.cache.get(key);
      if (hit && hit.refreshAt > now) return this.cachedAnswer(hit);
      const fresh = await this.sign(t.caId, [t]);
      if (this.cache.size >= CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, fresh);
      return this.cachedAnswer(fresh);
    }
    const byCa = new Set(targets.map((t) => t.caId));
    if (byCa.size > 1) {
      // One responder certificate signs one answer; mixing CAs in one request is not something clients do.
      return { der: statusResponse(OCSPResponseStatus.malformedRequest), statuses: [] };
    }
    const signed = await this.sign(targets[0]!.caId, targets, nonceExt);
    return { der: signed.der, statuses: signed.statuses };
  }

  private cachedAnswer(c: CachedResponse): OcspAnswer {
    return {
      der: c.der,
      statuses: [c.status],
      cache: {
        thisUpdate: c.thisUpdate,
        nextUpdate: c.nextUpdate,
        etag: `"${createHash('sha256').update(c.der).digest('base64url').slice(0, 22)}"`,
      },
    };
  }

  private readonly keyHashes = new WeakMap<OcspSigner, Buffer>();

  /** ResponderID byKey: SHA-1 of the responder's public key bits (RFC 6960 §4.2.1). */
  private responderKeyHash(signer: OcspSigner): Buffer {
    let hash = this.keyHashes.get(signer);
    if (!hash) {
      hash = keyIdentifierOf(signer.key.publicKey.export({ type: 'spki', format: 'der' }));
      this.keyHashes.set(signer, hash);
    }
    return hash;
  }

  private async sign(
    caId: string,
    targets: { certId: CertID; serial: string }[],
    nonce?: Extension,
  ): Promise<CachedResponse & { statuses: OcspStatus[] }> {
    const ca = this.authorities.get(caId);
    const signer = await this.signerFor(ca);
    const rows = await this.storage.db
      .selectFrom('certificates')
      .select(['serial', 'status', 'revoked_at', 'revocation_reason'])
      .where('issuer_id', '=', caId)
      .where(
        'serial',
        'in',
        targets.map((t) => t.serial),
      )
      .execute();
    const bySerial = new Map(rows.map((r) => [r.serial, r]));
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const nextUpdate = new Date(now.getTime() + this.validityMinutes * 60_000);
    const statuses: OcspStatus[] = [];
    const responses = targets.map((t) => {
      const row = bySerial.get(t.serial);
      let certStatus: CertStatus;
      if (!row) {
        certStatus = new CertStatus({ unknown: null });
        statuses.push('unknown');
      } else if (row.status === 'revoked') {
        const reason = row.revocation_reason as keyof typeof REVOCATION_REASONS | null;
        certStatus = new CertStatus({
          revoked: new RevokedInfo({
            // GeneralizedTime without fractional seconds (RFC 6960 §4.2.2.1, RFC 5280 §4.1.2.5.2).
            revocationTime: new Date(Math.floor(Date.parse(row.revoked_at!) / 1000) * 1000),
            ...(reason && reason !== 'unspecified'
              ? { revocationReason: new CRLReason(REVOCATION_REASONS[reason]) }
              : {}),
          }),
        });
        statuses.push('revoked');
      } else {
        certStatus = new CertStatus({ good: null });
        statuses.push('good');
      }
      return new SingleResponse({ certID: t.certId, certStatus, thisUpdate: now, nextUpdate });
    });
    const tbs = new ResponseData({
      responderID: new ResponderID({ byKey: new KeyHash(this.responderKeyHash(signer)) }),
      producedAt: now,
      responses,
      ...(nonce ? { responseExtensions: [nonce] } : {}),
    });
    const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
    const signature = await signer.key.sign(tbsDer);
    // BasicOCSPResponse and OCSPResponse wrap DER that is already encoded: the signed data, the
    // responder certificate as issued. Assembled directly rather than parsed and re-serialized.
    const basic = der.sequence(
      tbsDer,
      signatureAlgorithmDer(signer.key),
      der.bitString(signature),
      der.context(0, der.sequence(signer.certificateDer)),
    );
    const response = der.sequence(
      SUCCESSFUL,
      der.context(0, der.sequence(OCSP_BASIC_OID, der.octetString(basic))),
    );
    return {
      der: response,
      status: statuses[0]!,
      statuses,
      thisUpdate: now,
      nextUpdate,
      refreshAt: now.getTime() + (this.validityMinutes * 60_000) / 2,
    };
  }
}

/** `responseStatus successful` (ENUMERATED 0) and the id-pkix-ocsp-basic OID, DER. */
const SUCCESSFUL = Buffer.from('0a0100', 'hex');
const OCSP_BASIC_OID = Buffer.from('06092b0601050507300101', 'hex');

/** Length of the nonce: the extnValue holds an OCTET STRING (RFC 9654); older clients put raw bytes. */
function nonceLength(ext: Extension): number {
  const raw = Buffer.from(ext.extnValue.buffer);
  try {
    return AsnConvert.parse(raw, OctetString).byteLength;
  } catch {
    return raw.length;
  }
}
