import type { DeviceStatus } from '@rampart/shared/api';
import type { Executor } from '../../storage/index.js';
import { EnrollmentRefusal } from './policy.js';

/** The registry side of every enrollment: the device must exist and must not be disabled. */
export async function enrollableDevice(db: Executor, deviceId: string): Promise<{ status: DeviceStatus }> {
  const row = await db.selectFrom('devices').select('status').where('id', '=', deviceId).executeTakeFirst();
  if (!row)
    throw new EnrollmentRefusal(
      403,
      `device ${deviceId} is not registered; register it before it enrolls`,
      deviceId,
    );
  if (row.status === 'disabled')
    throw new EnrollmentRefusal(
      403,
      `device ${deviceId} is disabled; enable it before it can get a certificate`,
      deviceId,
    );
  return { status: row.status as DeviceStatus };
}
