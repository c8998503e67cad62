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
  type VirtualDeviceOptions,
} from './virtual-device.js';
export {
  DEFAULT_MODEL,
  DEFAULT_PREFIX,
  FleetSimulator,
  fleetDeviceIds,
  type FleetOptions,
  type FleetStats,
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
