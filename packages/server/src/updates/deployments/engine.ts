import { randomInt } from 'node:crypto';
import type {
  CreateDeploymentBody,
  DeploymentCounts,
  DeploymentDetail,
  DeploymentDeviceState,
  DeploymentDeviceView,
  DeploymentEvent,
  DeploymentPhaseView,
  DeploymentState,
  DeploymentView,
} from '@rampart/shared/api';
import type { Logger } from '@rampart/shared/logging';
import type { AuditLog } from '../../audit/log.js';
import { RampartError, notFound } from '../../errors.js';
import { compileFleetQuery, compileGroupFilter } from '../../fleet/query.js';
import { chunks, type Db, type Executor, type SqlDialect } from '../../storage/index.js';
import type { DeploymentsTable } from '../../storage/schema.js';
import { parseDuration } from '../../time.js';
import { isWindowOpen, parseWindows } from './windows.js';

/**
 * Where device assignments go: the director, which tells each device what to install. Injected so
 * that the engine can be tested (and run) without it.
 */
export interface AssignmentSink {
  assign(db: Executor, deviceId: string, path: string, deploymentId: string, actor: string): Promise<unknown>;
  unassign(db: Executor, deviceId: string, deploymentId?: string): Promise<unknown>;
}

export type Clock = () => Date;

export type DeviceOutcome = 'committed' | 'rolled-back' | 'failed';

export interface OutcomeReport {
  deviceId: string;
  deploymentId: number | string;
  path: string;
  outcome: DeviceOutcome;
  receiptId: string;
  /** When the platform received the receipt (ISO-8601). */
  at: string;
}

const ACTIVE: DeploymentState[] = ['running', 'paused'];
const OPEN: DeploymentDeviceState[] = ['pending', 'assigned'];
const FAILURES: DeploymentDeviceState[] = ['failed', 'rolled-back', 'timed-out'];
const ACTOR = 'system:deployments';
const IN_CHUNK = 500;
/** Default and longest time a canary short of devices waits for a free one. */
const CANARY_WAIT_DEFAULT = '1h';
const CANARY_WAIT_MAX_MS = 7 * 86_400_000;

type Row = Omit<DeploymentsTable, 'id'> & { id: number };

function iso(d: Date): string {
  return d.toISOString();
}

/** A duration for people: `90 min`, `2 h`, `45 s`. */
function durationText(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000} min`;
  return `${Math.round(ms / 1000)} s`;
}

function minutesBetween(from: string, to: Date): number {
  return Math.max(0, (to.getTime() - Date.parse(from)) / 60_000);
}

/** Phase (1 and up) a rollout is in `elapsed` minutes after it started. */
function rolloutPhase(d: Row, elapsedMinutes: number): number {
  return d.rate_growth > 1 ? 1 + Math.floor(elapsedMinutes / d.phase_minutes) : 1;
}

function rateOf(d: Row, phase: number): number {
  return d.rate_per_minute * Math.pow(d.rate_growth, Math.max(0, phase - 1));
}

function emptyCounts(): DeploymentCounts {
  return { total: 0, pending: 0, assigned: 0, succeeded: 0, failed: 0, other: 0 };
}

function addCount(c: DeploymentCounts, state: string, n: number): void {
  c.total += n;
  if (state === 'pending') c.pending += n;
  else if (state === 'assigned') c.assigned += n;
  else if (state === 'succeeded') c.succeeded += n;
  else if ((FAILURES as string[]).includes(state)) c.failed += n;
  else c.other += n;
}

/** Whether the abort rule trips for these counts. */
export function abortTrips(d: Pick<Row, 'abort_at_percent' | 'min_sample'>, c: DeploymentCounts): boolean {
  if (d.abort_at_percent === null) return false;
  const finished = c.succeeded + c.failed;
  return finished >= d.min_sample && (c.failed * 100) / finished >= d.abort_at_percent;
}

/**
 * Deployments: the domain logic. A deployment rolls a published release out to a target set (a
 * group, a fleet query or a list of devices): first a canary, then at a rate per minute (optionally
 * growing phase by phase), only while a maintenance window is open, stopped by the abort rule.
 * `tick(now)` advances every running deployment; the clock is a parameter so that tests control it.
 */
export class DeploymentEngine {
  constructor(
    private readonly db: Db,
    private readonly dialect: SqlDialect,
    private readonly sink: AssignmentSink,
    private readonly clock: Clock,
    private readonly audit: AuditLog | null,
    private readonly logger: Logger | null = null,
  ) {}

  /**
   * After `tick`: in how many milliseconds a running deployment has its next device due, when it has
   * devices waiting and is handing them out at its rate; null when none is (the scheduler's interval
   * is soon enough then).
   */
  nextDueMs: number | null = null;
  private readonly wakeListeners: (() => void)[] = [];

  /** Called by `wake` (the scheduler ticks at once). */
  onWake(listener: () => void): void {
    this.wakeListeners.push(listener);
  }

  /**
   * A deployment was created or resumed: advance deployments now rather than at the scheduler's
   * next interval. Call it once that transaction has committed.
   */
  wake(): void {
    for (const l of this.wakeListeners) l();
  }

  // -- creation and control -------------------------------------------------------------------

  /** Create and start a deployment (in the caller's transaction). */
  async create(tx: Executor, body: CreateDeploymentBody, actor: string): Promise<DeploymentView> {
    const release = await tx
      .selectFrom('update_releases')
      .select(['path', 'state'])
      .where('path', '=', body.release)
      .executeTakeFirst();
    if (!release || release.state !== 'published') {
      const message = release
        ? `release ${body.release} is not published yet (it waits for signatures); deploy it once it is`
        : `release ${body.release} does not exist; see \`rampart release list\``;
      throw new RampartError('VALIDATION', message, [{ field: 'release', message }]);
    }
    if (body.window !== undefined) parseWindows(body.window);
    const timeout = parseDuration(body.receiptTimeout ?? '30m');
    if (!timeout)
      throw new RampartError('VALIDATION', 'receiptTimeout is not a duration', [
        { field: 'receiptTimeout', message: 'must be a duration such as 30m' },
      ]);
    const canaryWait = parseDuration(body.canaryWaitTimeout ?? CANARY_WAIT_DEFAULT);
    if (canaryWait === null || canaryWait > CANARY_WAIT_MAX_MS)
      throw new RampartError('VALIDATION', 'canaryWaitTimeout is not a duration from 0s to 7d', [
        { field: 'canaryWaitTimeout', message: 'must be a duration from 0s to 7d, such as 1h' },
      ]);
    const { kind, value } = targetOf(body.target);
    const devices = await this.resolveTarget(tx, kind, value);
    const priority = body.priority ?? 0;

    // Every device in the target must be one the release fits: its model, and its hardware
    // revision when the release names revisions. The agent would refuse the others anyway.
    const fits = await this.releaseFit(tx, body.release);
    const misfits = await this.misfits(tx, devices, fits);
    if (misfits.length) {
      const sample = misfits
        .slice(0, 5)
        .map((m) => `${m.id} (${m.model}${m.revision ? ` rev ${m.revision}` : ''})`)
        .join(', ');
      const narrow =
        kind === 'query'
          ? `add \`and model = "${fits.models[0]}"\` to the query`
          : kind === 'group'
            ? `target the query \`group = "${value}" and model = "${fits.models[0]}"\` instead`
            : 'leave them out of the list';
      const message =
        `${misfits.length} device(s) in the target do not fit release ${body.release}, which is for ` +
        `${fits.models.join(', ')}${fits.revisions ? ` hardware revision(s) ${fits.revisions.join(', ')}` : ''}: ` +
        `${sample}${misfits.length > 5 ? ', …' : ''}; ${narrow}`;
      throw new RampartError('VALIDATION', message, [{ field: `target.${kind}`, message }]);
    }

    // One active deployment per device: equal priority overlapping is refused; a higher priority
    // takes devices over; devices held by a higher-priority deployment are left to it.
    const holders = await this.holders(tx, devices);
    const equal = [...holders].filter(([, h]) => h.priority === priority);
    if (equal.length) {
      const ids = [...new Set(equal.map(([, h]) => h.deploymentId))];
      const sample = equal.slice(0, 5).map(([dev]) => dev);
      throw new RampartError(
        'CONFLICT',
        `${equal.length} device(s) (${sample.join(', ')}${equal.length > 5 ? ', …' : ''}) are in active deployment(s) ` +
          `${ids.join(', ')} with the same priority ${priority}; cancel those, narrow the target, or give this one a higher --priority`,
      );
    }

    const canarySpec = body.canary ?? 0;
    const canarySize = canarySizeOf(canarySpec, devices.length);
    const now = iso(this.clock());
    const inserted = await tx
      .insertInto('deployments')
      .values({
        release_path: body.release,
        target_kind: kind,
        target_value: value,
        state: 'running',
        reason: null,
        canary: String(canarySpec),
        canary_size: canarySize,
        rate_per_minute: body.ratePerMinute ?? 10,
        rate_growth: body.rateGrowth ?? 1,
        phase_minutes: body.phaseMinutes ?? 10,
        window: body.window?.trim() ?? null,
        abort_at_percent: body.abortAtPercent ?? null,
        min_sample: body.minSample ?? 5,
        receipt_timeout_ms: timeout,
        canary_wait_ms: canaryWait,
        canary_waiting_since: null,
        continuous: body.continuous ? 1 : 0,
        priority,
        rollout_started_at: null,
        credit: 0,
        last_tick_at: null,
        created_at: now,
        created_by: actor,
        updated_at: now,
        finished_at: null,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const id = Number(inserted.id);
    // The canary is the first rows by sequence: shuffle, so that it is a random sample of the target.
    const order = [...devices];
    for (let i = order.length - 1; i > 0; i--) {
      const j = randomInt(i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    await this.addDevices(tx, id, priority, order, 1, holders, now);
    // Canary devices a higher-priority deployment holds are replaced by free ones at once.
    await this.refillCanary(tx, id, canarySize, now);
    return this.view(tx, id);
  }

  async pause(tx: Executor, id: number): Promise<DeploymentView> {
    const d = await this.row(tx, id);
    if (d.state !== 'running')
      throw new RampartError(
        'CONFLICT',
        `deployment ${id} is ${d.state}; only a running deployment can be paused`,
      );
    await tx
      .updateTable('deployments')
      .set({ state: 'paused', updated_at: iso(this.clock()) })
      .where('id', '=', id)
      .execute();
    return this.view(tx, id);
  }

  async resume(tx: Executor, id: number): Promise<DeploymentView> {
    const d = await this.row(tx, id);
    if (d.state !== 'paused')
      throw new RampartError(
        'CONFLICT',
        `deployment ${id} is ${d.state}; only a paused deployment can be resumed`,
      );
    const now = iso(this.clock());
    // No rate credit for the time it was paused; a canary short of devices waits afresh.
    await tx
      .updateTable('deployments')
      .set({ state: 'running', reason: null, updated_at: now, last_tick_at: now, canary_waiting_since: null })
      .where('id', '=', id)
      .execute();
    return this.view(tx, id);
  }

  /** Cancel: no more assignments; devices not done yet are unassigned. */
  async cancel(tx: Executor, id: number, actor: string): Promise<DeploymentView> {
    const d = await this.row(tx, id);
    if (!ACTIVE.includes(d.state as DeploymentState))
      throw new RampartError('CONFLICT', `deployment ${id} is ${d.state} already`);
    await this.stop(tx, d, 'cancelled', `cancelled by ${actor}`);
    return this.view(tx, id);
  }

  // -- the scheduler's step ------------------------------------------------------------------

  /** Advance every running deployment once. Returns the ids it looked at. */
  async tick(): Promise<number[]> {
    const ids = await this.db
      .selectFrom('deployments')
      .select('id')
      .where('state', '=', 'running')
      .orderBy('id')
      .execute();
    let soonest: number | null = null;
    for (const { id } of ids) {
      try {
        const due = await this.db.transaction().execute((tx) => this.step(tx, Number(id)));
        if (due !== null && (soonest === null || due < soonest)) soonest = due;
      } catch (err) {
        this.logger?.error({ err, deployment: id }, 'advancing a deployment failed');
      }
    }
    this.nextDueMs = soonest;
    if (ids.length) this.audit?.sealSoon();
    return ids.map((r) => Number(r.id));
  }

  /** Advance one deployment; returns in how many ms its next device is due (null: not by rate). */
  private async step(tx: Executor, id: number): Promise<number | null> {
    const d = await this.row(tx, id);
    if (d.state !== 'running') return null;
    const now = this.clock();
    const nowIso = iso(now);

    // Devices whose receipt did not arrive in time count as failed.
    const deadline = iso(new Date(now.getTime() - d.receipt_timeout_ms));
    const late = await tx
      .selectFrom('deployment_devices')
      .select('device_id')
      .where('deployment_id', '=', id)
      .where('state', '=', 'assigned')
      .where('assigned_at', '<=', deadline)
      .execute();
    for (const { device_id } of late) {
      await this.finish(tx, id, device_id, 'timed-out', nowIso, null, 'no receipt within the time-out');
      await this.sink.unassign(tx, device_id, String(id));
    }

    if (d.continuous) await this.follow(tx, d, nowIso);

    const counts = await this.counts(tx, id);
    if (abortTrips(d, counts.all)) {
      const reason = `abort rule: ${counts.all.failed} of ${counts.all.succeeded + counts.all.failed} finished devices failed (limit ${d.abort_at_percent}% with at least ${d.min_sample})`;
      await this.stop(tx, d, 'aborted', reason);
      return null;
    }

    const windowOpen = d.window === null || isWindowOpen(parseWindows(d.window), now);
    let rolloutStartedAt = d.rollout_started_at;
    let credit = d.credit;
    let canaryWaitingSince = d.canary_waiting_since;
    if (windowOpen && rolloutStartedAt === null) {
      // Canary: all of it at once, then wait until every canary device is done. A canary device
      // another deployment holds (or took over) is replaced by a free device of the target; while
      // none is free the canary is short: it waits up to the canary wait, then the deployment pauses.
      await this.refillCanary(tx, id, d.canary_size, nowIso);
      const canary = await tx
        .selectFrom('deployment_devices')
        .select(['device_id', 'state'])
        .where('deployment_id', '=', id)
        .where('seq', '<=', d.canary_size)
        .execute();
      for (const r of canary) if (r.state === 'pending') await this.assign(tx, d, r.device_id, 0, nowIso);
      const open = canary.filter((r) => OPEN.includes(r.state as DeploymentDeviceState)).length;
      const held = canary
        .filter((r) => r.state === 'superseded')
        .map((r) => r.device_id)
        .sort();
      if (!held.length) canaryWaitingSince = null;
      else {
        canaryWaitingSince ??= nowIso;
        if (now.getTime() - Date.parse(canaryWaitingSince) >= d.canary_wait_ms) {
          await this.pauseShortCanary(tx, d, held, nowIso);
          return null;
        }
      }
      if (open === 0 && !held.length) {
        // The rollout starts with one device at once, then goes on at its rate.
        rolloutStartedAt = nowIso;
        credit = 1;
      }
    } else if (windowOpen && rolloutStartedAt !== null) {
      const since = d.last_tick_at && d.last_tick_at > rolloutStartedAt ? d.last_tick_at : rolloutStartedAt;
      credit +=
        rateOf(d, rolloutPhase(d, minutesBetween(rolloutStartedAt, now))) * minutesBetween(since, now);
    }
    if (windowOpen && rolloutStartedAt !== null) {
      const phase = rolloutPhase(d, minutesBetween(rolloutStartedAt, now));
      const n = Math.floor(credit);
      if (n > 0) {
        const next = await tx
          .selectFrom('deployment_devices')
          .select('device_id')
          .where('deployment_id', '=', id)
          .where('state', '=', 'pending')
          .orderBy('seq')
          .limit(n)
          .execute();
        for (const r of next) await this.assign(tx, d, r.device_id, phase, nowIso);
        // No credit is saved up while there is nothing to assign (continuous mode).
        credit = next.length < n ? 0 : credit - next.length;
      }
    }

    const after = await this.counts(tx, id);
    const done = !d.continuous && rolloutStartedAt !== null && after.all.pending + after.all.assigned === 0;
    await tx
      .updateTable('deployments')
      .set({
        rollout_started_at: rolloutStartedAt,
        credit,
        last_tick_at: nowIso,
        canary_waiting_since: canaryWaitingSince,
        ...(done ? { state: 'completed', finished_at: nowIso, updated_at: nowIso } : {}),
      })
      .where('id', '=', id)
      .where('state', '=', 'running')
      .execute();
    if (done) {
      await this.audit?.append(tx, {
        actor: ACTOR,
        action: 'deployment.complete',
        target: `deployment:${id}`,
        outcome: 'success',
        details: { release: d.release_path, ...after.all },
      });
      this.logger?.info({ deployment: id, ...after.all }, 'deployment completed');
    }
    if (done || !windowOpen || rolloutStartedAt === null || after.all.pending === 0) return null;
    // Credit grows at the rate: the next whole device is due when it reaches 1.
    const rate = rateOf(d, rolloutPhase(d, minutesBetween(rolloutStartedAt, now)));
    return rate > 0 ? (Math.max(0, 1 - credit) / rate) * 60_000 : null;
  }

  /**
   * Replace canary devices (the first `canarySize` rows by sequence) that another deployment holds
   * or took over (superseded) by the next pending devices of the target: they swap sequence numbers,
   * so that the replacement is in the canary and the superseded device is not. Pending devices are
   * free: a device another deployment holds is superseded here.
   */
  private async refillCanary(tx: Executor, id: number, canarySize: number, nowIso: string): Promise<void> {
    if (canarySize === 0) return;
    const held = await tx
      .selectFrom('deployment_devices')
      .select(['device_id', 'seq'])
      .where('deployment_id', '=', id)
      .where('seq', '<=', canarySize)
      .where('state', '=', 'superseded')
      .orderBy('seq')
      .execute();
    if (!held.length) return;
    const spare = await tx
      .selectFrom('deployment_devices')
      .select(['device_id', 'seq'])
      .where('deployment_id', '=', id)
      .where('seq', '>', canarySize)
      .where('state', '=', 'pending')
      .orderBy('seq')
      .limit(held.length)
      .execute();
    for (const [i, s] of spare.entries()) {
      const h = held[i]!;
      await this.setSeq(tx, id, s.device_id, Number(h.seq));
      await this.setSeq(tx, id, h.device_id, Number(s.seq));
      await this.event(
        tx,
        id,
        h.device_id,
        'canary-replaced',
        nowIso,
        `replaced in the canary by ${s.device_id}`,
      );
    }
  }

  private async setSeq(tx: Executor, id: number, deviceId: string, seq: number): Promise<void> {
    await tx
      .updateTable('deployment_devices')
      .set({ seq })
      .where('deployment_id', '=', id)
      .where('device_id', '=', deviceId)
      .execute();
  }

  /**
   * The canary waited `canary_wait_ms` for free devices in place of `held` and none came: pause the
   * deployment with the reason, and shrink the canary to the devices it has, so that a resume goes on
   * with them (a cancel ends it).
   */
  private async pauseShortCanary(tx: Executor, d: Row, held: string[], nowIso: string): Promise<void> {
    const rows = await tx
      .selectFrom('deployment_devices')
      .select(['device_id', 'state', 'seq'])
      .where('deployment_id', '=', d.id)
      .orderBy('seq')
      .execute();
    const inCanary = rows.filter((r) => Number(r.seq) <= d.canary_size);
    const keep = inCanary.filter((r) => r.state !== 'superseded');
    const size = keep.length;
    // The kept devices take sequence numbers 1..size; the held ones move past the last.
    let last = rows.reduce((m, r) => Math.max(m, Number(r.seq)), 0);
    for (const r of inCanary) if (r.state === 'superseded') await this.setSeq(tx, d.id, r.device_id, ++last);
    const taken = new Set(keep.map((r) => Number(r.seq)).filter((s) => s <= size));
    const free = Array.from({ length: size }, (_, i) => i + 1).filter((s) => !taken.has(s));
    for (const r of keep.filter((k) => Number(k.seq) > size))
      await this.setSeq(tx, d.id, r.device_id, free.shift()!);

    const holders: { detail: string | null }[] = [];
    for (const part of chunks(held, IN_CHUNK))
      holders.push(
        ...(await tx
          .selectFrom('deployment_events')
          .select('detail')
          .where('deployment_id', '=', d.id)
          .where('event', '=', 'superseded')
          .where('device_id', 'in', part)
          .execute()),
      );
    const by = [
      ...new Set(
        holders.map((h) => /deployment ([0-9]+)/.exec(h.detail ?? '')?.[1]).filter((x) => x !== undefined),
      ),
    ];
    const reason =
      `canary short: ${held.length} of ${d.canary_size} canary device(s) (${held.slice(0, 5).join(', ')}` +
      `${held.length > 5 ? ', …' : ''}) are held by ${by.length ? `deployment(s) ${by.join(', ')}` : 'another deployment'} ` +
      `and no other device of the target was free within ${durationText(d.canary_wait_ms)}; ` +
      `resume to go on with a canary of ${size}, or cancel`;
    for (const dev of held)
      await this.event(tx, d.id, dev, 'canary-short', nowIso, 'no free device to replace it in the canary');
    await tx
      .updateTable('deployments')
      .set({
        state: 'paused',
        reason,
        canary_size: size,
        canary_waiting_since: null,
        last_tick_at: nowIso,
        updated_at: nowIso,
      })
      .where('id', '=', d.id)
      .execute();
    await this.audit?.append(tx, {
      actor: ACTOR,
      action: 'deployment.pause',
      target: `deployment:${d.id}`,
      outcome: 'success',
      details: { release: d.release_path, reason },
    });
    this.logger?.warn({ deployment: d.id, reason }, 'deployment paused: canary short of devices');
  }

  /** Continuous mode: add devices that entered the target, drop pending ones that left it. */
  private async follow(tx: Executor, d: Row, nowIso: string): Promise<void> {
    const target = await this.resolveTarget(tx, d.target_kind as TargetKind, d.target_value, false);
    const known = await tx
      .selectFrom('deployment_devices')
      .select(['device_id', 'state', 'seq'])
      .where('deployment_id', '=', d.id)
      .execute();
    const inTarget = new Set(target);
    const knownIds = new Set(known.map((r) => r.device_id));
    const gone = known
      .filter((r) => r.state === 'pending' && !inTarget.has(r.device_id))
      .map((r) => r.device_id);
    for (const part of chunks(gone, IN_CHUNK))
      await tx
        .deleteFrom('deployment_devices')
        .where('deployment_id', '=', d.id)
        .where('device_id', 'in', part)
        .where('state', '=', 'pending')
        .execute();
    // Devices entering the target that the release does not fit are left out (and not retried).
    let entered = target.filter((dev) => !knownIds.has(dev));
    if (!entered.length) return;
    const misfit = new Set(
      (await this.misfits(tx, entered, await this.releaseFit(tx, d.release_path))).map((m) => m.id),
    );
    entered = entered.filter((dev) => !misfit.has(dev));
    if (!entered.length) return;
    const holders = await this.holders(tx, entered, d.id);
    const seq = known.reduce((m, r) => Math.max(m, r.seq), 0) + 1;
    await this.addDevices(tx, d.id, d.priority, entered, seq, holders, nowIso, true);
  }

  /**
   * Insert rows for devices (from sequence number `seq`): a device held by a deployment with a higher
   * (or, when following, equal) priority is recorded as superseded; one held by a lower-priority
   * deployment is taken over.
   */
  private async addDevices(
    tx: Executor,
    id: number,
    priority: number,
    devices: readonly string[],
    seq: number,
    holders: Map<string, Holder>,
    nowIso: string,
    following = false,
  ): Promise<void> {
    const rows = devices.map((deviceId, i) => {
      const h = holders.get(deviceId);
      const yields = h !== undefined && (h.priority > priority || (following && h.priority === priority));
      return {
        deployment_id: id,
        device_id: deviceId,
        seq: seq + i,
        state: yields ? 'superseded' : 'pending',
        phase: null,
        assigned_at: null,
        finished_at: yields ? nowIso : null,
        receipt_id: null,
      };
    });
    for (const part of chunks(rows, 100)) await tx.insertInto('deployment_devices').values(part).execute();
    for (const r of rows) {
      const h = holders.get(r.device_id);
      if (r.state === 'superseded' && h) {
        await this.event(tx, id, r.device_id, 'superseded', nowIso, `held by deployment ${h.deploymentId}`);
      } else if (h && h.priority < priority) {
        await this.finish(
          tx,
          h.deploymentId,
          r.device_id,
          'superseded',
          nowIso,
          null,
          `taken over by deployment ${id}`,
        );
        if (h.state === 'assigned') await this.sink.unassign(tx, r.device_id, String(h.deploymentId));
      }
    }
  }

  private async assign(tx: Executor, d: Row, deviceId: string, phase: number, nowIso: string): Promise<void> {
    await tx
      .updateTable('deployment_devices')
      .set({ state: 'assigned', phase, assigned_at: nowIso })
      .where('deployment_id', '=', d.id)
      .where('device_id', '=', deviceId)
      .execute();
    await this.event(tx, d.id, deviceId, 'assigned', nowIso, `phase ${phase}`);
    await this.sink.assign(tx, deviceId, d.release_path, String(d.id), ACTOR);
  }

  /** Stop a deployment (abort or cancel): open devices are cancelled, assigned ones unassigned. */
  private async stop(tx: Executor, d: Row, state: 'aborted' | 'cancelled', reason: string): Promise<void> {
    const nowIso = iso(this.clock());
    const open = await tx
      .selectFrom('deployment_devices')
      .select(['device_id', 'state'])
      .where('deployment_id', '=', d.id)
      .where('state', 'in', OPEN)
      .execute();
    for (const r of open) {
      await this.finish(tx, d.id, r.device_id, 'cancelled', nowIso, null, reason);
      if (r.state === 'assigned') await this.sink.unassign(tx, r.device_id, String(d.id));
    }
    await tx
      .updateTable('deployments')
      .set({ state, reason, finished_at: nowIso, updated_at: nowIso })
      .where('id', '=', d.id)
      .execute();
    if (state === 'aborted') {
      await this.audit?.append(tx, {
        actor: ACTOR,
        action: 'deployment.abort',
        target: `deployment:${d.id}`,
        outcome: 'success',
        details: { release: d.release_path, reason },
      });
      this.logger?.warn({ deployment: d.id, reason }, 'deployment aborted');
    }
  }

  private async finish(
    tx: Executor,
    id: number,
    deviceId: string,
    state: DeploymentDeviceState,
    nowIso: string,
    receiptId: string | null,
    detail: string | null,
  ): Promise<void> {
    await tx
      .updateTable('deployment_devices')
      .set({ state, finished_at: nowIso, ...(receiptId ? { receipt_id: receiptId } : {}) })
      .where('deployment_id', '=', id)
      .where('device_id', '=', deviceId)
      .execute();
    await this.event(tx, id, deviceId, state, nowIso, detail);
  }

  private async event(
    tx: Executor,
    id: number,
    deviceId: string,
    event: string,
    at: string,
    detail: string | null,
  ): Promise<void> {
    await tx
      .insertInto('deployment_events')
      .values({ deployment_id: id, device_id: deviceId, event, at, detail })
      .execute();
  }

  // -- targets ---------------------------------------------------------------------------------

  private async resolveTarget(
    tx: Executor,
    kind: TargetKind,
    value: string,
    strict = true,
  ): Promise<string[]> {
    if (kind === 'devices') {
      const ids = [...new Set(value.split(','))];
      const found = new Set<string>();
      for (const part of chunks(ids, IN_CHUNK)) {
        const rows = await tx.selectFrom('devices').select('id').where('id', 'in', part).execute();
        for (const r of rows) found.add(r.id);
      }
      const missing = ids.filter((i) => !found.has(i));
      if (missing.length && strict) {
        const message = `unknown device(s): ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''}`;
        throw new RampartError('VALIDATION', message, [{ field: 'target.devices', message }]);
      }
      return ids.filter((i) => found.has(i)).sort();
    }
    if (kind === 'group') {
      const g = await tx.selectFrom('device_groups').select('id').where('id', '=', value).executeTakeFirst();
      if (!g) {
        const message = `group ${value} does not exist; see \`rampart fleet groups list\``;
        throw new RampartError('VALIDATION', message, [{ field: 'target.group', message }]);
      }
    }
    const filter =
      kind === 'group'
        ? await compileGroupFilter(tx, this.dialect, value)
        : await compileFleetQuery(tx, this.dialect, value);
    const rows = await tx.selectFrom('devices').select('id').where(filter).orderBy('id').execute();
    return rows.map((r) => r.id);
  }

  /** The models and hardware revisions a release is for (from its signed target metadata). */
  private async releaseFit(
    tx: Executor,
    path: string,
  ): Promise<{ models: string[]; revisions: string[] | null }> {
    const row = await tx
      .selectFrom('update_releases')
      .select('custom')
      .where('path', '=', path)
      .executeTakeFirstOrThrow();
    const custom = JSON.parse(row.custom) as { models: string[]; hardwareRevisions?: string[] };
    return { models: custom.models, revisions: custom.hardwareRevisions ?? null };
  }

  /** The devices a release does not fit: another model, or a hardware revision it does not name. */
  private async misfits(
    tx: Executor,
    devices: readonly string[],
    fits: { models: string[]; revisions: string[] | null },
  ): Promise<{ id: string; model: string; revision: string | null }[]> {
    const out: { id: string; model: string; revision: string | null }[] = [];
    for (const part of chunks([...devices], IN_CHUNK)) {
      const rows = await tx
        .selectFrom('devices')
        .select(['id', 'model_id', 'hardware_revision'])
        .where('id', 'in', part)
        .execute();
      for (const r of rows)
        if (
          !fits.models.includes(r.model_id) ||
          (fits.revisions !== null &&
            (r.hardware_revision === null || !fits.revisions.includes(r.hardware_revision)))
        )
          out.push({ id: r.id, model: r.model_id, revision: r.hardware_revision });
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  /** Active deployments (other than `except`) holding each of these devices (pending or assigned). */
  private async holders(
    tx: Executor,
    devices: readonly string[],
    except?: number,
  ): Promise<Map<string, Holder>> {
    const out = new Map<string, Holder>();
    for (const part of chunks([...devices], IN_CHUNK)) {
      let q = tx
        .selectFrom('deployment_devices as dd')
        .innerJoin('deployments as d', 'd.id', 'dd.deployment_id')
        .select(['dd.device_id', 'dd.state', 'd.id', 'd.priority'])
        .where('dd.device_id', 'in', part)
        .where('dd.state', 'in', OPEN)
        .where('d.state', 'in', ACTIVE);
      if (except !== undefined) q = q.where('d.id', '!=', except);
      for (const r of await q.execute())
        out.set(r.device_id, { deploymentId: Number(r.id), priority: Number(r.priority), state: r.state });
    }
    return out;
  }

  // -- reading -------------------------------------------------------------------------------

  private async row(db: Executor, id: number): Promise<Row> {
    const d = await db.selectFrom('deployments').selectAll().where('id', '=', id).executeTakeFirst();
    if (!d) throw notFound(`deployment ${id}`);
    return normalize(d as Row);
  }

  private async counts(db: Executor, id: number): Promise<{ all: DeploymentCounts; rows: CountRow[] }> {
    const rows = await db
      .selectFrom('deployment_devices')
      .select(['state', 'phase', (eb) => eb.fn.countAll<number>().as('n')])
      .where('deployment_id', '=', id)
      .groupBy(['state', 'phase'])
      .execute();
    const all = emptyCounts();
    for (const r of rows) addCount(all, r.state, Number(r.n));
    return {
      all,
      rows: rows.map((r) => ({
        state: r.state,
        phase: r.phase === null ? null : Number(r.phase),
        n: Number(r.n),
      })),
    };
  }

  async view(db: Executor, id: number): Promise<DeploymentView> {
    return this.toView(db, await this.row(db, id));
  }

  private async toView(db: Executor, d: Row): Promise<DeploymentView> {
    const { all, rows } = await this.counts(db, d.id);
    const now = this.clock();
    const currentPhase =
      d.rollout_started_at === null ? 0 : rolloutPhase(d, minutesBetween(d.rollout_started_at, now));
    const canaryPending = Number(
      (
        await db
          .selectFrom('deployment_devices')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('deployment_id', '=', d.id)
          .where('state', '=', 'pending')
          .where('seq', '<=', d.canary_size)
          .executeTakeFirst()
      )?.n ?? 0,
    );
    const phases: DeploymentPhaseView[] = [];
    const phaseOf = (index: number): DeploymentPhaseView => {
      let p = phases.find((x) => x.index === index);
      if (!p) {
        p = {
          index,
          name: index === 0 ? 'canary' : d.rate_growth > 1 ? `phase ${index}` : 'rollout',
          ratePerMinute: index === 0 ? null : rateOf(d, index),
          counts: emptyCounts(),
        };
        phases.push(p);
      }
      return p;
    };
    if (d.canary_size > 0) phaseOf(0);
    if (canaryPending) addCount(phaseOf(0).counts, 'pending', canaryPending);
    for (let i = 1; i <= Math.max(1, currentPhase); i++) phaseOf(i);
    for (const r of rows) {
      if (r.phase === null) {
        if (r.state === 'pending') {
          const rest = r.n - canaryPending;
          if (rest > 0) addCount(phaseOf(Math.max(1, currentPhase)).counts, 'pending', rest);
        }
        continue;
      }
      addCount(phaseOf(r.phase).counts, r.state, r.n);
    }
    phases.sort((a, b) => a.index - b.index);
    return {
      id: d.id,
      release: d.release_path,
      target: { kind: d.target_kind as TargetKind, value: d.target_value },
      state: d.state as DeploymentState,
      reason: d.reason,
      canary: /%$/.test(d.canary) ? d.canary : Number(d.canary),
      canarySize: d.canary_size,
      ratePerMinute: d.rate_per_minute,
      rateGrowth: d.rate_growth,
      phaseMinutes: d.phase_minutes,
      window: d.window,
      windowOpen: d.window === null || isWindowOpen(parseWindows(d.window), now),
      abortAtPercent: d.abort_at_percent,
      minSample: d.min_sample,
      receiptTimeoutMs: d.receipt_timeout_ms,
      canaryWaitTimeoutMs: d.canary_wait_ms,
      canaryWaitingSince: d.canary_waiting_since,
      continuous: d.continuous === 1,
      priority: d.priority,
      phase: currentPhase,
      counts: all,
      phases,
      createdAt: d.created_at,
      createdBy: d.created_by,
      updatedAt: d.updated_at,
      finishedAt: d.finished_at,
    };
  }

  async detail(db: Executor, id: number): Promise<DeploymentDetail> {
    const deployment = await this.view(db, id);
    const rows = await db
      .selectFrom('deployment_devices')
      .selectAll()
      .where('deployment_id', '=', id)
      .orderBy('seq')
      .execute();
    const devices: DeploymentDeviceView[] = rows.map((r) => ({
      deviceId: r.device_id,
      state: r.state as DeploymentDeviceState,
      phase: r.phase === null ? null : Number(r.phase),
      assignedAt: r.assigned_at,
      finishedAt: r.finished_at,
      receiptId: r.receipt_id,
    }));
    return { deployment, devices };
  }

  async list(db: Executor, filter: { state?: DeploymentState } = {}): Promise<DeploymentView[]> {
    let q = db.selectFrom('deployments').selectAll().orderBy('id', 'desc');
    if (filter.state) q = q.where('state', '=', filter.state);
    const rows = await q.execute();
    return Promise.all(rows.map((r) => this.toView(db, normalize(r as Row))));
  }

  /** Every deployment event of one device, newest first. */
  async history(db: Executor, deviceId: string): Promise<DeploymentEvent[]> {
    const rows = await db
      .selectFrom('deployment_events as e')
      .innerJoin('deployments as d', 'd.id', 'e.deployment_id')
      .select(['e.deployment_id', 'd.release_path', 'e.device_id', 'e.event', 'e.at', 'e.detail'])
      .where('e.device_id', '=', deviceId)
      .orderBy('e.id', 'desc')
      .execute();
    return rows.map((r) => ({
      deploymentId: Number(r.deployment_id),
      release: r.release_path,
      deviceId: r.device_id,
      event: r.event,
      at: r.at,
      detail: r.detail,
    }));
  }
}

type TargetKind = 'group' | 'query' | 'devices';
interface Holder {
  deploymentId: number;
  priority: number;
  state: string;
}
interface CountRow {
  state: string;
  phase: number | null;
  n: number;
}

function targetOf(t: CreateDeploymentBody['target']): { kind: TargetKind; value: string } {
  if ('group' in t) return { kind: 'group', value: t.group };
  if ('query' in t) return { kind: 'query', value: t.query };
  return { kind: 'devices', value: [...new Set(t.devices)].join(',') };
}

export function canarySizeOf(spec: number | string, total: number): number {
  if (typeof spec === 'number') return Math.min(spec, total);
  const pct = Number(spec.slice(0, -1));
  return pct > 0 ? Math.min(total, Math.max(1, Math.ceil((total * pct) / 100))) : 0;
}

/** PostgreSQL returns numeric columns as numbers or strings depending on type: make them numbers. */
function normalize(d: Row): Row {
  return {
    ...d,
    id: Number(d.id),
    canary_size: Number(d.canary_size),
    rate_per_minute: Number(d.rate_per_minute),
    rate_growth: Number(d.rate_growth),
    phase_minutes: Number(d.phase_minutes),
    abort_at_percent: d.abort_at_percent === null ? null : Number(d.abort_at_percent),
    min_sample: Number(d.min_sample),
    receipt_timeout_ms: Number(d.receipt_timeout_ms),
    canary_wait_ms: Number(d.canary_wait_ms),
    continuous: Number(d.continuous),
    priority: Number(d.priority),
    credit: Number(d.credit),
  };
}

/**
 * The director's hook: a device's signed receipt for a deployment arrived. `committed` within the
 * receipt time-out counts as succeeded; `rolled-back` and `failed` count as failures; a receipt after
 * the time-out leaves the device timed out and is kept in its history as a late receipt. The same
 * receipt twice changes nothing. Returns the device's state in the deployment, or null when the
 * device is not in that deployment (for that release).
 */
export async function recordOutcome(
  db: Executor,
  report: OutcomeReport,
): Promise<DeploymentDeviceState | null> {
  const id = Number(report.deploymentId);
  if (!Number.isSafeInteger(id)) return null;
  const row = await db
    .selectFrom('deployment_devices as dd')
    .innerJoin('deployments as d', 'd.id', 'dd.deployment_id')
    .select(['dd.state', 'dd.assigned_at', 'dd.receipt_id', 'd.release_path', 'd.receipt_timeout_ms'])
    .where('dd.deployment_id', '=', id)
    .where('dd.device_id', '=', report.deviceId)
    .executeTakeFirst();
  if (!row || row.release_path !== report.path) return null;
  const state = row.state as DeploymentDeviceState;
  if (row.receipt_id === report.receiptId) return state;
  const event = async (name: string, detail: string | null) =>
    db
      .insertInto('deployment_events')
      .values({ deployment_id: id, device_id: report.deviceId, event: name, at: report.at, detail })
      .execute();
  if (state !== 'assigned' || row.assigned_at === null) {
    await event('late-receipt', `${report.outcome} (receipt ${report.receiptId}) while ${state}`);
    return state;
  }
  const deadline = Date.parse(row.assigned_at) + Number(row.receipt_timeout_ms);
  const next: DeploymentDeviceState =
    Date.parse(report.at) > deadline
      ? 'timed-out'
      : report.outcome === 'committed'
        ? 'succeeded'
        : report.outcome === 'rolled-back'
          ? 'rolled-back'
          : 'failed';
  await db
    .updateTable('deployment_devices')
    .set({ state: next, finished_at: report.at, receipt_id: report.receiptId })
    .where('deployment_id', '=', id)
    .where('device_id', '=', report.deviceId)
    .where('state', '=', 'assigned')
    .execute();
  await event(
    next,
    next === 'timed-out' ? `${report.outcome} receipt after the time-out` : `receipt ${report.receiptId}`,
  );
  return next;
}
