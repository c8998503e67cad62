export {
  loadAgentConfig,
  AgentConfigSchema,
  AGENT_FLAG_NAMES,
  AGENT_SECRET_ENV,
  type AgentConfig,
} from './config.js';
export type { TrustAnchor } from './trust-anchor/trust-anchor.js';
export { SoftwareTrustAnchor } from './trust-anchor/software.js';
export { trustAnchorFor } from './anchor.js';
export { AgentError, type AgentErrorCode } from './errors.js';
export {
  EstClient,
  estBaseUrl,
  authorizationHeader,
  type EstClientOptions,
  type EnrollmentCredentials,
  type ClientCertificate,
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
