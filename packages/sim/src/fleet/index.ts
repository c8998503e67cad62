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
} from './fleet.js';
