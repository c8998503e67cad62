import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { keyIdOf } from '@rampart/shared/provisioning';
import { RampartError } from '../errors.js';
import type { Executor } from '../storage/index.js';
import { isoNow } from '../time.js';
import type { IdentityService } from '../identity/service.js';
import { certificateStatusChanged } from '../identity/certificate-status.js';
import type { StationsTable, ManufacturerCasTable } from '../storage/schema.js';
import { isUniqueViolation } from '../fleet/devices.js';
import { sha256Hex } from '../fleet/import.js';

/**
 * Factory stations and the manufacturing CAs that birth certificates chain to.
 *
 * A station is registered with its public key. Registration also issues the station a CA
 * certificate (pathLen 0) under Rampart's manufacturing CA, for the same key, so that the station
 * can issue birth certificates while offline; the same key signs the station's batch manifests.
 * Revoking a station makes its manifests and birth certificates worthless from then on.
 *
 * Birth certificates made elsewhere (a module vendor's or a contract manufacturer's IDevIDs) chain
 * to an external manufacturing CA, which an operator registers by its certificate.
 */
export interface Station {
  name: string;
  keyId: string;
  publicKey: string;
  caSerial: string | null;
  description: string;
  status: 'active' | 'revoked';
  registeredAt: string;
  registeredBy: string;
  revokedAt: string | null;
}

export interface ManufacturerCa {
  name: string;
  subject: string;
  fingerprint: string;
  notAfter: string;
  registeredAt: string;
  registeredBy: string;
  certificate: string;
}

export const STATION_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const STATION_CA_DAYS = 10 * 365;

function toStation(r: StationsTable): Station {
  return {
    name: r.name,
    keyId: r.key_id,
    publicKey: r.public_key,
    caSerial: r.ca_serial,
    description: r.description,
    status: r.status as Station['status'],
    registeredAt: r.registered_at,
    registeredBy: r.registered_by,
    revokedAt: r.revoked_at,
  };
}

function toManufacturer(r: ManufacturerCasTable): ManufacturerCa {
  return {
    name: r.name,
    subject: r.subject,
    fingerprint: r.fingerprint,
    notAfter: r.not_after,
    registeredAt: r.registered_at,
    registeredBy: r.registered_by,
    certificate: r.certificate,
  };
}

export function certificateFingerprint(cert: X509Certificate): string {
  return sha256Hex(cert.raw);
}

export class Stations {
  /** Bumped on every change, so that the birth-certificate verifier reloads its issuers. */
  generation = 0;

  constructor(private readonly identity: IdentityService) {}

  async register(
    db: Executor,
    input: { name: string; publicKeyPem: string; description?: string; actor: string },
  ): Promise<{ station: Station; certificatePem: string; chainPem: string }> {
    if (!STATION_NAME.test(input.name))
      throw new RampartError(
        'VALIDATION',
        'name must be lower-case letters, digits, ".", "_" or "-" (up to 63)',
        [{ field: 'name', message: 'is not a valid station name' }],
      );
    let key: KeyObject;
    try {
      key = createPublicKey(input.publicKeyPem);
    } catch {
      throw new RampartError('VALIDATION', 'publicKey is not a PEM public key', [
        { field: 'publicKey', message: 'is not a PEM public key' },
      ]);
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
      throw new RampartError('VALIDATION', 'a station key must be ECDSA P-256', [
        { field: 'publicKey', message: 'is not an ECDSA P-256 key' },
      ]);
    const keyId = keyIdOf(key);
    const issued = await this.identity.issuer.issueStationCa(db, key, input.name, STATION_CA_DAYS);
    const row: StationsTable = {
      name: input.name,
      public_key: key.export({ type: 'spki', format: 'pem' }) as string,
      key_id: keyId,
      ca_serial: issued.record.serial,
      description: input.description ?? '',
      status: 'active',
      registered_at: isoNow(),
      registered_by: input.actor,
      revoked_at: null,
    };
    try {
      await db.insertInto('stations').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err))
        throw new RampartError(
          'CONFLICT',
          `a station named ${input.name} or with this key is already registered`,
        );
      throw err;
    }
    this.generation++;
    const chainPem = this.identity.chainOf(issued.record).slice(issued.record.certificatePem.length);
    return { station: toStation(row), certificatePem: issued.record.certificatePem, chainPem };
  }

  async list(db: Executor): Promise<Station[]> {
    return (await db.selectFrom('stations').selectAll().orderBy('name').execute()).map(toStation);
  }

  async find(db: Executor, name: string): Promise<Station | null> {
    const row = await db.selectFrom('stations').selectAll().where('name', '=', name).executeTakeFirst();
    return row ? toStation(row) : null;
  }

  async get(db: Executor, name: string): Promise<Station> {
    const s = await this.find(db, name);
    if (!s)
      throw new RampartError('NOT_FOUND', `station ${name} is not registered; see rampart station list`);
    return s;
  }

  /** Revoke a station: its CA certificate is revoked, its manifests and birth certificates refused. */
  async revoke(db: Executor, name: string): Promise<Station> {
    const station = await this.get(db, name);
    if (station.status === 'revoked') return station;
    const at = isoNow();
    await db
      .updateTable('stations')
      .set({ status: 'revoked', revoked_at: at })
      .where('name', '=', name)
      .execute();
    if (station.caSerial)
      await db
        .updateTable('certificates')
        .set({ status: 'revoked', revoked_at: at, revocation_reason: 'cessationOfOperation' })
        .where('serial', '=', station.caSerial)
        .where('status', '=', 'good')
        .execute();
    if (station.caSerial) certificateStatusChanged();
    this.generation++;
    return { ...station, status: 'revoked', revokedAt: at };
  }

  async addManufacturer(
    db: Executor,
    input: { name: string; certificatePem: string; actor: string },
  ): Promise<ManufacturerCa> {
    if (!STATION_NAME.test(input.name))
      throw new RampartError('VALIDATION', 'name must be lower-case letters, digits, ".", "_" or "-"', [
        { field: 'name', message: 'is not a valid name' },
      ]);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(input.certificatePem);
    } catch {
      throw new RampartError('VALIDATION', 'certificate is not a PEM X.509 certificate', [
        { field: 'certificate', message: 'is not a PEM certificate' },
      ]);
    }
    if (!cert.ca)
      throw new RampartError(
        'VALIDATION',
        'the certificate is not a CA certificate (basicConstraints cA is not set)',
        [{ field: 'certificate', message: 'is not a CA certificate' }],
      );
    if (Date.parse(cert.validTo) <= Date.now())
      throw new RampartError(
        'VALIDATION',
        `the CA certificate expired on ${new Date(cert.validTo).toISOString()}`,
        [{ field: 'certificate', message: 'has expired' }],
      );
    const row: ManufacturerCasTable = {
      name: input.name,
      subject: cert.subject.replace(/\n/g, ', '),
      fingerprint: certificateFingerprint(cert),
      certificate: cert.toString(),
      not_after: new Date(cert.validTo).toISOString(),
      registered_at: isoNow(),
      registered_by: input.actor,
    };
    try {
      await db.insertInto('manufacturer_cas').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err))
        throw new RampartError(
          'CONFLICT',
          `a manufacturing CA named ${input.name} or with this certificate is already registered`,
        );
      throw err;
    }
    this.generation++;
    return toManufacturer(row);
  }

  async manufacturers(db: Executor): Promise<ManufacturerCa[]> {
    return (await db.selectFrom('manufacturer_cas').selectAll().orderBy('name').execute()).map(
      toManufacturer,
    );
  }

  async removeManufacturer(db: Executor, name: string): Promise<void> {
    const r = await db.deleteFrom('manufacturer_cas').where('name', '=', name).executeTakeFirst();
    if (!r.numDeletedRows)
      throw new RampartError('NOT_FOUND', `no manufacturing CA named ${name} is registered`);
    this.generation++;
  }
}
