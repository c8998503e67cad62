import { RampartError } from '../errors.js';
import type { FleetRegistry } from '../fleet/registry.js';
import { isUniqueViolation } from '../fleet/devices.js';
import type { ShadowService } from '../gateway/shadows.js';
import type { Executor } from '../storage/index.js';
import type { EnrollmentPoliciesTable } from '../storage/schema.js';
import { isoNow } from '../time.js';
import type {
  EnrollmentPolicyBody,
  EnrollmentPolicyKind,
  EnrollmentPolicyView,
  Placement,
} from '@rampart/shared/api';

/**
 * Stored enrollment policies: who may enroll, and where an enrolled device lands in the registry
 * (model, groups, attributes, initial desired shadow). Each change bumps the version, and the
 * version that decided an enrollment is named in its transcript.
 *
 * - `group`: the birth certificate chains to one of `issuers` and the device is in an imported
 *   manifest (zero-touch).
 * - `claim`: a claim certificate shared by one batch, for the device ids on its allowlist, each once,
 *   at most `ratePerMinute` per minute.
 * - `individual`: one device, known by its key or certificate fingerprint.
 */
export const DEFAULT_GROUP_POLICY = 'factory';

type PolicyConfig = NonNullable<EnrollmentPolicyBody['config']>;

/** Which config members each kind takes, and which it needs. */
const CONFIG_MEMBERS: Record<
  EnrollmentPolicyKind,
  { allowed: (keyof PolicyConfig)[]; required: (keyof PolicyConfig)[] }
> = {
  group: { allowed: ['issuers', 'models'], required: [] },
  claim: { allowed: ['batch', 'allowlist', 'ratePerMinute'], required: ['batch'] },
  individual: { allowed: ['deviceId', 'keyFingerprint', 'certificateFingerprint'], required: ['deviceId'] },
};

function checkConfig(kind: EnrollmentPolicyKind, config: PolicyConfig): void {
  const { allowed, required } = CONFIG_MEMBERS[kind];
  const invalid = (field: string, message: string) =>
    new RampartError('VALIDATION', `config.${field} ${message}`, [{ field: `config.${field}`, message }]);
  for (const key of Object.keys(config) as (keyof PolicyConfig)[])
    if (!allowed.includes(key))
      throw invalid(key, `does not apply to ${kind} policies (they take ${allowed.join(', ')})`);
  for (const key of required)
    if (config[key] === undefined) throw invalid(key, `is required for ${kind} policies`);
  if (kind === 'individual' && !config.keyFingerprint === !config.certificateFingerprint)
    throw invalid(
      'keyFingerprint',
      'or config.certificateFingerprint (exactly one) names how the device is known',
    );
}

function toView(r: EnrollmentPoliciesTable): EnrollmentPolicyView {
  return {
    name: r.name,
    kind: r.kind as EnrollmentPolicyKind,
    version: r.version,
    enabled: r.enabled === 1,
    description: r.description,
    config: JSON.parse(r.config) as EnrollmentPolicyView['config'],
    placement: JSON.parse(r.placement) as Placement,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export class EnrollmentPolicies {
  constructor(
    private readonly fleet: FleetRegistry,
    private readonly shadows: ShadowService,
  ) {}

  async list(db: Executor, kind?: EnrollmentPolicyKind): Promise<EnrollmentPolicyView[]> {
    let q = db.selectFrom('enrollment_policies').selectAll().orderBy('name');
    if (kind) q = q.where('kind', '=', kind);
    return (await q.execute()).map(toView);
  }

  async find(db: Executor, name: string): Promise<EnrollmentPolicyView | null> {
    const r = await db
      .selectFrom('enrollment_policies')
      .selectAll()
      .where('name', '=', name)
      .executeTakeFirst();
    return r ? toView(r) : null;
  }

  async get(db: Executor, name: string): Promise<EnrollmentPolicyView> {
    const p = await this.find(db, name);
    if (!p)
      throw new RampartError(
        'NOT_FOUND',
        `enrollment policy ${name} does not exist; see rampart enrollment policy list`,
      );
    return p;
  }

  private async checkPlacement(db: Executor, placement: Placement): Promise<void> {
    if (placement.model) {
      const m = await db
        .selectFrom('device_models')
        .select('id')
        .where('id', '=', placement.model)
        .executeTakeFirst();
      if (!m)
        throw new RampartError('VALIDATION', `placement.model ${placement.model} does not exist`, [
          { field: 'placement.model', message: 'is not a device model' },
        ]);
    }
    for (const g of placement.groups ?? []) {
      const row = await db
        .selectFrom('device_groups')
        .select(['id', 'query'])
        .where('id', '=', g)
        .executeTakeFirst();
      if (!row || row.query !== null)
        throw new RampartError('VALIDATION', `placement.groups: ${g} is not a static group`, [
          { field: 'placement.groups', message: `${g} is not a static group` },
        ]);
    }
  }

  async create(db: Executor, body: EnrollmentPolicyBody): Promise<EnrollmentPolicyView> {
    checkConfig(body.kind, body.config ?? {});
    await this.checkPlacement(db, body.placement ?? {});
    const now = isoNow();
    const row: EnrollmentPoliciesTable = {
      name: body.name,
      kind: body.kind,
      version: 1,
      enabled: body.enabled === false ? 0 : 1,
      config: JSON.stringify(body.config ?? {}),
      placement: JSON.stringify(body.placement ?? {}),
      description: body.description ?? '',
      created_at: now,
      updated_at: now,
    };
    try {
      await db.insertInto('enrollment_policies').values(row).execute();
    } catch (err) {
      if (isUniqueViolation(err))
        throw new RampartError('CONFLICT', `enrollment policy ${body.name} already exists`);
      throw err;
    }
    return toView(row);
  }

  async update(
    db: Executor,
    name: string,
    patch: Partial<Pick<EnrollmentPolicyBody, 'config' | 'placement' | 'description' | 'enabled'>>,
  ): Promise<EnrollmentPolicyView> {
    const current = await this.get(db, name);
    if (patch.config) checkConfig(current.kind, patch.config);
    if (patch.placement) await this.checkPlacement(db, patch.placement);
    const next = {
      version: current.version + 1,
      enabled: (patch.enabled ?? current.enabled) ? 1 : 0,
      config: JSON.stringify(patch.config ?? current.config),
      placement: JSON.stringify(patch.placement ?? current.placement),
      description: patch.description ?? current.description,
      updated_at: isoNow(),
    };
    await db.updateTable('enrollment_policies').set(next).where('name', '=', name).execute();
    return this.get(db, name);
  }

  async delete(db: Executor, name: string): Promise<void> {
    const r = await db.deleteFrom('enrollment_policies').where('name', '=', name).executeTakeFirst();
    if (!r.numDeletedRows) throw new RampartError('NOT_FOUND', `enrollment policy ${name} does not exist`);
  }

  /** Create the default zero-touch policy (any registered manufacturing CA or station) on first start. */
  async ensureDefault(db: Executor): Promise<EnrollmentPolicyView | null> {
    const any = await db.selectFrom('enrollment_policies').select('name').executeTakeFirst();
    if (any) return null;
    return this.create(db, {
      name: DEFAULT_GROUP_POLICY,
      kind: 'group',
      description:
        'Devices with a birth certificate from a registered station or manufacturing CA, in an imported manifest',
      config: { issuers: ['*'] },
      placement: {},
    });
  }

  /**
   * Register a device on its first enrollment where `placement` says, or check that an existing
   * one may enroll. Returns the device's model and whether it was created now.
   */
  async place(
    db: Executor,
    deviceId: string,
    from: { model: string; hardwareRevision: string | null; serial: string | null },
    placement: Placement,
  ): Promise<{ created: boolean; model: string }> {
    const existing = await db
      .selectFrom('devices')
      .select(['model_id', 'status'])
      .where('id', '=', deviceId)
      .executeTakeFirst();
    if (existing) return { created: false, model: existing.model_id };
    const model = from.model || placement.model;
    if (!model) throw new RampartError('CONFLICT', `no model is known for device ${deviceId}`);
    const modelRow = await db
      .selectFrom('device_models')
      .select('id')
      .where('id', '=', model)
      .executeTakeFirst();
    if (!modelRow)
      throw new RampartError(
        'CONFLICT',
        `device model ${model} is not registered; create it before its devices enroll: rampart model create ${model}`,
      );
    await this.fleet.devices.create(db, {
      id: deviceId,
      model,
      ...((from.hardwareRevision ?? placement.hardwareRevision)
        ? { hardwareRevision: (from.hardwareRevision ?? placement.hardwareRevision)! }
        : {}),
      ...(from.serial ? { serial: from.serial } : {}),
      ...(placement.attributes ? { attributes: placement.attributes } : {}),
      ...(placement.groups?.length ? { groups: placement.groups } : {}),
      status: 'pending',
    });
    if (placement.shadow && Object.keys(placement.shadow).length)
      await this.shadows.update(db, deviceId, 'desired', placement.shadow);
    return { created: true, model };
  }
}
