export {
  PROFILES,
  PROFILE_NAMES,
  assignProfiles,
  parseProfileMix,
  spedUp,
  type Profile,
  type ProfileName,
  type ProfileShare,
} from './profiles.js';
export {
  SIMULATED_FIRMWARE,
  VirtualDevice,
  zeroCounters,
  type DeviceCounters,
  type ManufacturedDevice,
  type SimulatedAnchor,
  type DeviceUpdateOptions,
  type VirtualDeviceOptions,
} from './virtual-device.js';
export {
  DeviceUpdater,
  SimulatedOutage,
  UPDATE_FAULTS,
  describeUpdateFaults,
  noUpdateFaults,
  parseUpdateFaults,
  zeroUpdateCounters,
  type DeviceUpdaterOptions,
  type FaultRate,
  type UpdateCounters,
  type UpdateFault,
  type UpdateFaults,
} from './updates.js';
export {
  DEFAULT_MODEL,
  DEFAULT_PREFIX,
  FleetSimulator,
  fleetDeviceIds,
  type FleetOptions,
  type FleetStats,
  type FleetUpdateOptions,
  type Provisioner,
  type ProvisionResult,
  type ZeroTouchOptions,
  type ZeroTouchResult,
} from './fleet.js';
export {
  SIMULATED_BOOT,
  batchName,
  measureSimulatedBoot,
  signedManifest,
  simulatedReferenceValues,
  type Factory,
  type FactoryStation,
  type ReferenceValue,
} from './zero-touch.js';
export { missingTpmTools, startSoftwareTpm, type SoftwareTpm } from './swtpm.js';
