export {
  loadAgentConfig,
  AgentConfigSchema,
  AGENT_FLAG_NAMES,
  AGENT_SECRET_ENV,
  REDACTED,
  redactedConfig,
  type AgentConfig,
} from './config.js';
export type { TrustAnchor } from './trust-anchor/trust-anchor.js';
export { SoftwareTrustAnchor } from './trust-anchor/software.js';
export { TpmTrustAnchor, DEFAULT_PARENT_HANDLE, type TpmTrustAnchorOptions } from './trust-anchor/tpm.js';
export {
  Pkcs11TrustAnchor,
  DEFAULT_PKCS11_KEY_LABEL,
  type Pkcs11TrustAnchorOptions,
} from './trust-anchor/pkcs11.js';
export { trustAnchorFor } from './anchor.js';
export { AgentError, type AgentErrorCode } from './errors.js';
export {
  EstClient,
  estBaseUrl,
  authorizationHeader,
  type EstClientOptions,
  type EnrollmentCredentials,
  type ClientCertificate,
  type AttestationOperation,
  type EstReply,
} from './est/client.js';
export { checkDeviceId, createDeviceCsr } from './identity/csr.js';
export {
  CLOCK_SKEW_MS,
  parseCertificate,
  parsePinnedRoots,
  certificatesFromPem,
  checkIssuedCertificate,
  pathToRoot,
  caCertificatesChainingTo,
  type CertificateInfo,
  type ParsedCertificate,
  type IssuedCertificateCheck,
  type CheckedIdentity,
} from './identity/certificate.js';
export { IdentityStore, CERT_FILE_MODE } from './identity/store.js';
export { writeFileAtomic } from './identity/files.js';
export { enrollDevice, renewDevice, type EnrollOptions, type RenewOptions } from './identity/enroll.js';
export {
  BIRTH_FILES,
  FACTORY_DEVICE_FORMAT,
  FactoryDeviceSchema,
  readBirthIdentity,
  writeBirthIdentity,
  type BirthFiles,
  type BirthIdentity,
  type BirthIdentityInput,
  type FactoryDevice,
} from './provisioning/birth.js';
export {
  collectEvidence,
  type CollectEvidenceOptions,
  type TpmAttestation,
  type TpmSignedStatement,
} from './provisioning/evidence.js';
export {
  AttestationClient,
  attestDevice,
  attestationRefusal,
  type AttestOptions,
  type AttestationNonce,
  type AttestationReply,
  type AttestationResult,
} from './provisioning/client.js';
export { provisionDevice, type ProvisionOptions, type ProvisionOutcome } from './provisioning/provision.js';
export {
  EventLog,
  SoftwareRegister,
  TpmPcrs,
  measure,
  measurementStore,
  type MeasurementRegister,
} from './attestation/measurements.js';
export {
  RENEWAL_FRACTION,
  RENEWAL_JITTER,
  renewalSafetyMargin,
  renewalTime,
  expiredCertificateMessage,
  RenewalScheduler,
  type RenewalSchedulerOptions,
  type RenewalEvent,
  type SchedulerOutcome,
  type SchedulerClock,
  type SchedulerTimers,
  type RetryPolicy,
} from './identity/renewal.js';
export { DEFAULT_BACKOFF, backoffCeiling, backoffDelay, type BackoffPolicy } from './connection/backoff.js';
export {
  DEFAULT_QUEUE_BOUNDS,
  MemoryQueue,
  messageBytes,
  type MessageQueue,
  type OutboundMessage,
  type QueuedMessage,
  type QueueBounds,
} from './connection/queue.js';
export { FileQueue, type FileQueueOptions, type QueueRecovery } from './connection/file-queue.js';
export { identityCredentials, type ConnectionCredentials } from './connection/credentials.js';
export {
  describeConnectFailure,
  type ConnectFailure,
  type ConnectFailureKind,
} from './connection/failure.js';
export {
  DeviceConnection,
  type DeviceConnectionOptions,
  type GatewayLink,
  type ConnectionState,
  type ConnectionEvents,
  type OnlineEvent,
  type OfflineEvent,
  type DroppedEvent,
  type PublishOptions,
} from './connection/connection.js';
export { topicMatches } from './connection/topics.js';
export {
  ShadowSync,
  type ShadowSyncOptions,
  type ShadowSyncEvents,
  type ShadowSnapshot,
  type DeltaHandler,
} from './connection/shadow.js';
export {
  CommandDispatcher,
  type CommandDispatcherOptions,
  type CommandHandler,
  type CommandContext,
} from './connection/commands.js';
export {
  AgentDaemon,
  DEFAULT_GATEWAY_PORT,
  agentRunning,
  gatewayUrl,
  logRenewalEvent,
  readAgentStatus,
  statusFile,
  type AgentDaemonOptions,
  type AgentStatus,
} from './daemon.js';
export { VERSION as AGENT_VERSION } from './version.js';
export { mutualTlsIdentity, type MutualTlsIdentity } from './identity/current.js';
export {
  UpdateClient,
  type DirectorIdentity,
  type ReceiptDelivery,
  type UpdateCheck,
  type UpdateClientOptions,
} from './updates/client.js';
export {
  INSTALL_STEPS,
  Installer,
  type InstallRequest,
  type InstallStep,
  type InstallerOptions,
  type ReceiptSigner,
  type UpdateResult,
} from './updates/installer.js';
export { FileRollbackCounter } from './updates/counter.js';
