export {
  DEFAULT_PORT_RANGE,
  AddressRotation,
  addressesNeeded,
  localPortRange,
  loopbackAddresses,
  parsePortRange,
  portsIn,
  type PortRange,
} from './addresses.js';
export {
  ConnackError,
  LoadDevice,
  targetKey,
  type BrokerTarget,
  type ConnectTiming,
  type DeviceConnectOptions,
  type DeviceIdentity,
  type DeviceState,
  type PublishCallback,
} from './device.js';
export {
  LoadEngine,
  type EngineOptions,
  type OpenOptions,
  type OpenResult,
  type PublishOptions,
  type PublishResult,
} from './engine.js';
export {
  LoadGenerator,
  WORKER_MODULE,
  openReport,
  publishReport,
  withOpenFileLimit,
  type LoadGeneratorOptions,
  type OpenReport,
  type PublishReport,
} from './generator.js';
export {
  CONNACK_REASONS,
  FrameReader,
  PACKET,
  decodePublish,
  encodeConnect,
  encodePuback,
  encodePublish,
  encodeSubscribe,
  topicFor,
  type Frame,
  type IncomingPublish,
} from './mqtt.js';
export { shareOf, widthPerWorker, type WorkerStatus } from './protocol.js';
export {
  ErrorTally,
  LatencyHistogram,
  coveringSpan,
  epochNow,
  ratePerSecond,
  type HistogramData,
  type LatencySummary,
  type Span,
} from './stats.js';
