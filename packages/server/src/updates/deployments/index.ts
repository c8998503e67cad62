export {
  DeploymentEngine,
  abortTrips,
  canarySizeOf,
  recordOutcome,
  type AssignmentSink,
  type Clock,
  type DeviceOutcome,
  type OutcomeReport,
} from './engine.js';
export { DeploymentScheduler } from './scheduler.js';
export { isWindowOpen, localTime, parseWindows, type MaintenanceWindow } from './windows.js';
