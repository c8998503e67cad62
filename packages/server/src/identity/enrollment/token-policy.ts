import { checkDeviceIdentity } from '../csr-policy.js';
import type { Executor } from '../../storage/index.js';
import { enrollableDevice } from './device-check.js';
import {
  EnrollmentRefusal,
  type EnrollmentContext,
  type EnrollmentDecision,
  type EnrollmentPolicy,
} from './policy.js';
import type { EnrollmentTokens } from './tokens.js';

const REFUSED: Record<string, string> = {
  malformed: 'the enrollment token is not in the rpe_… format',
  unknown: 'the enrollment token is not known',
  'wrong-secret': 'the enrollment token is not valid',
  used: 'the enrollment token was already used; create a new one: rampart enrollment token create --device ID',
  expired: 'the enrollment token has expired; create a new one: rampart enrollment token create --device ID',
  revoked: 'the enrollment token was revoked',
};

/**
 * A one-time enrollment token bound to a device id, presented as the HTTP Basic password with the
 * device id as user name (what unmodified EST clients send) or as a Bearer token.
 */
export class OneTimeTokenPolicy implements EnrollmentPolicy {
  readonly name = 'one-time-token';

  constructor(
    private readonly tokens: EnrollmentTokens,
    private readonly validityHours: () => number,
    private readonly activate: (tx: Executor, deviceId: string) => Promise<void>,
  ) {}

  handles(ctx: EnrollmentContext): boolean {
    return (
      ctx.operation === 'simpleenroll' &&
      (ctx.credentials.basic !== undefined || ctx.credentials.bearer !== undefined)
    );
  }

  async decide(db: Executor, ctx: EnrollmentContext): Promise<EnrollmentDecision> {
    const presented = ctx.credentials.basic?.password ?? ctx.credentials.bearer ?? '';
    const claimed = ctx.credentials.basic?.username ?? ctx.csr.commonName ?? undefined;
    const check = await this.tokens.check(db, presented);
    if (!check.ok) throw new EnrollmentRefusal(401, REFUSED[check.reason]!, claimed);
    const token = check.record;
    if (ctx.credentials.basic && ctx.credentials.basic.username !== token.deviceId)
      throw new EnrollmentRefusal(
        403,
        `the enrollment token belongs to device ${token.deviceId}, not to ${ctx.credentials.basic.username}`,
        ctx.credentials.basic.username,
      );
    const mismatch = checkDeviceIdentity(ctx.csr, token.deviceId);
    if (mismatch) throw new EnrollmentRefusal(403, mismatch.reason, token.deviceId);
    const device = await enrollableDevice(db, token.deviceId);
    return {
      deviceId: token.deviceId,
      policy: this.name,
      validityHours: this.validityHours(),
      renews: null,
      supersede: false,
      credential: { enrollmentToken: token.id },
      commit: async (tx, serial) => {
        if (!(await this.tokens.consume(tx, token.id, serial)))
          throw new EnrollmentRefusal(401, REFUSED.used!, token.deviceId);
        if (device.status === 'pending') await this.activate(tx, token.deviceId);
      },
    };
  }
}
