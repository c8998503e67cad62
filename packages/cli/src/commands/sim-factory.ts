import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ReferenceValueView, StationView } from '@rampart/shared/api';
import { keyIdOf, type BatchManifest } from '@rampart/shared/provisioning';
import type { Factory, FactoryStation, ReferenceValue } from '@rampart/sim/fleet';
import type { ApiClient } from '../connection.js';
import { CliError, EXIT } from '../errors.js';
import { loadServer } from '../server.js';

/** Birth certificates of simulated devices last as long as real ones are meant to: ten years. */
const BIRTH_VALIDITY_DAYS = 3650;

/** What `POST /api/v1/stations` answers (the parts the simulator keeps). */
interface RegisteredStation {
  station: StationView;
  certificate: string;
  rootCertificate: string;
}

/** The station as the simulator keeps it between runs, next to its key. */
interface SavedStation {
  name: string;
  certificate: string;
  rootCertificate: string;
}

/**
 * The simulator's factory, through the management API with a token that has `model:write` and
 * `provisioning:manage` (the operator role): it registers a station (its key and CA certificate
 * kept in `<dir>/station/`, so the next run is the same station), creates the model with the
 * reference values of the simulated firmware, issues birth certificates offline with the station
 * key, and imports the signed batch manifests.
 */
export class ApiFactory implements Factory {
  constructor(
    private readonly client: ApiClient,
    private readonly options: { station: string; dir: string },
  ) {}

  async open(model: string, references: readonly ReferenceValue[]): Promise<FactoryStation> {
    await this.client.call('/api/v1/device-models', {
      method: 'POST',
      body: { id: model, name: model, description: 'Simulated devices (rampart sim)' },
      accept: [409],
    });
    const known = await this.client.get<ReferenceValueView[]>('/api/v1/reference-values', { model });
    for (const r of references)
      if (!known.some((k) => k.component === r.component && k.digest === r.digest))
        await this.client.call('/api/v1/reference-values', {
          method: 'POST',
          body: { model, component: r.component, digest: r.digest, description: r.description },
          accept: [409],
        });
    return this.station();
  }

  async importBatch(manifest: BatchManifest): Promise<void> {
    await this.client.post('/api/v1/batches', manifest);
  }

  private async station(): Promise<FactoryStation> {
    const { station: name } = this.options;
    const dir = join(this.options.dir, 'station');
    const keyFile = join(dir, 'station-key.pem');
    const stateFile = join(dir, 'station.json');
    let key = existsSync(keyFile) ? createPrivateKey(readFileSync(keyFile)) : null;
    let saved = existsSync(stateFile) ? (JSON.parse(readFileSync(stateFile, 'utf8')) as SavedStation) : null;
    const registered = (await this.client.get<StationView[]>('/api/v1/stations')).find(
      (s) => s.name === name,
    );
    if (registered) {
      if (!key || saved?.name !== name || registered.keyId !== keyIdOf(createPublicKey(key)))
        throw new CliError(
          `station ${name} is already registered on the platform, with a key this simulator does not hold`,
          EXIT.conflict,
          ['pass --station with a name of its own, or --sim-dir of the run that registered the station'],
        );
      if (registered.status !== 'active')
        throw new CliError(`station ${name} was revoked on ${registered.revokedAt}`, EXIT.conflict, [
          'its birth certificates are refused; pass --station with another name',
        ]);
    } else {
      key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      const reg = await this.client.post<RegisteredStation>('/api/v1/stations', {
        name,
        publicKey: createPublicKey(key).export({ type: 'spki', format: 'pem' }),
        description: 'Simulated factory station (rampart sim --zero-touch)',
      });
      saved = { name, certificate: reg.certificate, rootCertificate: reg.rootCertificate };
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(keyFile, key.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      writeFileSync(stateFile, JSON.stringify(saved, null, 2) + '\n', { mode: 0o600 });
    }
    return stationOf(key, saved!);
  }
}

function stationOf(key: KeyObject, saved: SavedStation): FactoryStation {
  return {
    name: saved.name,
    caPem: saved.certificate,
    rootPem: saved.rootCertificate,
    publicKey: createPublicKey(key),
    sign: async (data) => sign('sha256', data, key),
    issueBirthCertificate: async (device) => {
      const { issueBirthCertificate } = await loadServer();
      return issueBirthCertificate({
        stationKey: key,
        stationCaPem: saved.certificate,
        deviceSpki: device.spki,
        deviceId: device.deviceId,
        serial: device.serial,
        validityDays: BIRTH_VALIDITY_DAYS,
      });
    },
  };
}
