import type { ColumnType, Generated } from 'kysely';

/** Attributes as read: SQLite yields JSON text, PostgreSQL a parsed jsonb value. */
export type JsonColumn = ColumnType<unknown, string, string>;

export interface PlatformSettingsTable {
  key: string;
  value: string;
}

export interface ApiTokensTable {
  id: string;
  name: string;
  role: string;
  secret_hash: string;
  created_at: string;
  created_by: string;
  expires_at: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface AuditEntriesTable {
  seq: number;
  time: string;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  details: string;
  prev_hash: string;
  hash: string;
}

/** Entries committed with their change and waiting to be placed in the chain by the sealer. */
export interface AuditQueueTable {
  id: Generated<number>;
  time: string;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  details: string;
}

export interface AuditCheckpointsTable {
  id: Generated<number>;
  entry_count: number;
  head_hash: string;
  time: string;
  key_id: string;
  algorithm: string;
  signature: string;
}

export interface DeviceModelsTable {
  id: string;
  name: string;
  description: string;
  /** 1 when releases for the model are encrypted (0012). */
  encrypt_updates: Generated<number>;
  created_at: string;
  updated_at: string;
}

export interface HardwareRevisionsTable {
  model_id: string;
  revision: string;
  description: string;
  created_at: string;
}

export interface DevicesTable {
  id: string;
  model_id: string;
  hardware_revision: string | null;
  serial: string | null;
  attributes: JsonColumn;
  status: string;
  created_at: string;
  updated_at: string;
  status_changed_at: string;
  decommissioned_at: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface DeviceGroupsTable {
  id: string;
  name: string;
  description: string;
  parent_id: string | null;
  query: string | null;
  created_at: string;
  updated_at: string;
}

export interface DeviceGroupMembersTable {
  group_id: string;
  device_id: string;
  added_at: string;
}

export interface AttributeIndexesTable {
  name: string;
  created_at: string;
}

export interface CertificateAuthoritiesTable {
  id: string;
  kind: string;
  generation: number;
  parent_id: string | null;
  key_label: string;
  key_algorithm: string;
  key_state: string;
  key_exported_at: string | null;
  subject: string;
  serial: string;
  certificate: string;
  not_before: string;
  not_after: string;
  status: string;
  crl_number: number;
  created_at: string;
}

export interface CertificatesTable {
  serial: string;
  issuer_id: string;
  profile: string;
  device_id: string | null;
  subject: string;
  not_before: string;
  not_after: string;
  key_fingerprint: string;
  key_algorithm: string;
  renewed_from: string | null;
  enrollment_policy: string | null;
  status: string;
  revoked_at: string | null;
  revocation_reason: string | null;
  certificate: string;
  created_at: string;
}

export interface EnrollmentTokensTable {
  id: string;
  device_id: string;
  secret_hash: string;
  created_at: string;
  created_by: string;
  expires_at: string;
  used_at: string | null;
  used_for: string | null;
  revoked_at: string | null;
}

export interface CrlsTable {
  issuer_id: string;
  crl_number: number;
  this_update: string;
  next_update: string;
  der: string;
}

export interface PoliciesTable {
  name: string;
  description: string;
  version: number;
  created_at: string;
  updated_at: string;
}

export interface PolicyVersionsTable {
  name: string;
  version: number;
  document: string;
  created_at: string;
  created_by: string;
}

export interface PolicyAttachmentsTable {
  name: string;
  target_kind: string;
  target_id: string;
  attached_at: string;
  attached_by: string;
}

export interface DeviceShadowsTable {
  device_id: string;
  desired: string;
  reported: string;
  version: number;
  updated_at: string;
  desired_updated_at: string | null;
  reported_updated_at: string | null;
}

export interface DeviceCommandsTable {
  id: string;
  device_id: string;
  name: string;
  args: string;
  status: string;
  timeout_ms: number;
  result: string | null;
  error: string | null;
  created_by: string;
  created_at: string;
  completed_at: string | null;
}

export interface DeviceConnectionStatsTable {
  device_id: string;
  connect_attempts: number;
  connects: number;
  disconnects: number;
  messages_in: number;
  messages_out: number;
  bytes_in: number;
  bytes_out: number;
  authorization_failures: number;
  last_source_address: string | null;
  last_connected_at: string | null;
  last_disconnected_at: string | null;
  last_disconnect_reason: string | null;
  updated_at: string;
}

export interface SecurityEventsTable {
  id: Generated<number>;
  time: string;
  kind: string;
  device_id: string | null;
  source_address: string | null;
  reason: string;
}

export interface StationsTable {
  name: string;
  public_key: string;
  key_id: string;
  ca_serial: string | null;
  description: string;
  status: string;
  registered_at: string;
  registered_by: string;
  revoked_at: string | null;
}

export interface ManufacturerCasTable {
  name: string;
  subject: string;
  fingerprint: string;
  certificate: string;
  not_after: string;
  registered_at: string;
  registered_by: string;
}

export interface BatchesTable {
  id: string;
  station: string;
  manifest_digest: string;
  device_count: number;
  created_at: string;
  closed_at: string;
  imported_at: string;
  imported_by: string;
  manifest: string;
}

export interface ManifestDevicesTable {
  device_id: string;
  batch_id: string;
  serial: string;
  model: string;
  hardware_revision: string | null;
  trust_anchor: string;
  key_fingerprint: string;
  birth_certificate: string | null;
  birth_fingerprint: string | null;
  birth_serial: string | null;
  ek: string | null;
  ak: string | null;
  provisioned_at: string;
}

export interface EnrollmentPoliciesTable {
  name: string;
  kind: string;
  version: number;
  enabled: number;
  config: string;
  placement: string;
  description: string;
  created_at: string;
  updated_at: string;
}

export interface ClaimUsesTable {
  policy: string;
  device_id: string;
  certificate_serial: string;
  used_at: string;
}

export interface ModelProvisioningTable {
  model: string;
  attestation: string;
  accept_warning: number;
  admit_software: number;
  certificate_hours: number;
  updated_at: string;
}

export interface ReferenceValuesTable {
  id: Generated<number>;
  model: string;
  component: string;
  digest: string;
  description: string;
  source: string;
  created_at: string;
}

export interface AttestationNoncesTable {
  nonce_hash: string;
  expires_at: string;
}

export interface AttestationResultsTable {
  id: string;
  device_id: string;
  status: string;
  anchor: string;
  reasons: string;
  measurements: string;
  evidence_digest: string;
  key_fingerprint: string;
  birth_fingerprint: string | null;
  token_hash: string | null;
  token_expires_at: string | null;
  token_used_at: string | null;
  created_at: string;
}

export interface ProvisioningTranscriptsTable {
  id: string;
  device_id: string;
  certificate_serial: string | null;
  decision: string;
  created_at: string;
  document: string;
}

export interface TufMetadataTable {
  role: string;
  version: number;
  document: string;
  expires: string;
  published_at: string;
}

export interface TufKeysTable {
  key_id: string;
  key: string;
  /** `online` (in the key store), `offline` (public key only) or `development` (in the key store, insecure). */
  origin: string;
  keystore_label: string | null;
  created_at: string;
}

export interface TufSigningRequestsTable {
  id: Generated<number>;
  role: string;
  version: number;
  document: string;
  state: string;
  reason: string;
  created_at: string;
  created_by: string;
  published_at: string | null;
}

export interface UpdateArtifactsTable {
  sha256: string;
  length: ColumnType<number, number, number>;
  location: string;
  created_at: string;
}

/** The content key of an encrypted artifact, wrapped to the key store's content-key KEK (never in clear). */
export interface UpdateContentKeysTable {
  /** SHA-256 of the ciphertext (the stored artifact). */
  sha256: string;
  plaintext_sha256: string;
  /** JWE compact serialization (ECDH-ES+A256KW, A256GCM) whose plaintext is the content key. */
  wrapped_key: string;
  created_at: string;
}

export interface UpdateReleasesTable {
  path: string;
  role: string;
  name: string;
  version: string;
  sha256: string;
  length: ColumnType<number, number, number>;
  first_model: string;
  release_counter: number;
  custom: string;
  state: string;
  signing_request: number | null;
  created_at: string;
  created_by: string;
  /** Why signing failed after the release was prepared (state `failed`), 0011. */
  failure: Generated<string | null>;
}

/** A patch offered with a release, from an earlier release's image (0011). */
export interface UpdateDeltasTable {
  release_path: string;
  from_path: string;
  from_version: string;
  from_sha256: string;
  /** The patch's path under the targets URL (not a TUF target: its digest is in the release's signed metadata). */
  target_path: string;
  /** The patch file in the artifact store. */
  sha256: string;
  length: ColumnType<number, number, number>;
  ratio: number;
  created_at: string;
}

export interface UpdateAssignmentsTable {
  device_id: string;
  target_path: string;
  deployment_id: string | null;
  assigned_at: string;
  assigned_by: string;
}

export interface DirectorRootsTable {
  version: number;
  document: string;
  expires: string;
  created_at: string;
}

export interface DirectorMetadataTable {
  device_id: string;
  version: number;
  /** Canonical JSON of what the document lists (targets), to tell whether a new version is needed. */
  content: string;
  document: string;
  expires: string;
  signed_at: string;
}

export interface UpdateReceiptsTable {
  seq: Generated<number>;
  id: string;
  device_id: string;
  outcome: string;
  target_path: string | null;
  deployment_id: string | null;
  version: string;
  sha256: string;
  document: string;
  certificate_serial: string;
  received_at: string;
}

export interface DeploymentsTable {
  id: Generated<number>;
  release_path: string;
  target_kind: string;
  target_value: string;
  state: string;
  reason: string | null;
  canary: string;
  canary_size: number;
  rate_per_minute: number;
  rate_growth: number;
  phase_minutes: number;
  window: string | null;
  abort_at_percent: number | null;
  min_sample: number;
  receipt_timeout_ms: number;
  /** How long a canary short of devices waits for free ones before the deployment pauses (0013). */
  canary_wait_ms: number;
  /** Since when the canary has been short of devices; null when it is not (0013). */
  canary_waiting_since: string | null;
  continuous: number;
  priority: number;
  rollout_started_at: string | null;
  credit: number;
  last_tick_at: string | null;
  created_at: string;
  created_by: string;
  updated_at: string;
  finished_at: string | null;
}

export interface DeploymentDevicesTable {
  deployment_id: number;
  device_id: string;
  seq: number;
  state: string;
  phase: number | null;
  assigned_at: string | null;
  finished_at: string | null;
  receipt_id: string | null;
}

export interface DeploymentEventsTable {
  id: Generated<number>;
  deployment_id: number;
  device_id: string;
  event: string;
  at: string;
  detail: string | null;
}

export interface Database {
  platform_settings: PlatformSettingsTable;
  api_tokens: ApiTokensTable;
  audit_entries: AuditEntriesTable;
  audit_queue: AuditQueueTable;
  audit_checkpoints: AuditCheckpointsTable;
  device_models: DeviceModelsTable;
  hardware_revisions: HardwareRevisionsTable;
  devices: DevicesTable;
  device_groups: DeviceGroupsTable;
  device_group_members: DeviceGroupMembersTable;
  attribute_indexes: AttributeIndexesTable;
  certificate_authorities: CertificateAuthoritiesTable;
  certificates: CertificatesTable;
  enrollment_tokens: EnrollmentTokensTable;
  crls: CrlsTable;
  policies: PoliciesTable;
  policy_versions: PolicyVersionsTable;
  policy_attachments: PolicyAttachmentsTable;
  device_shadows: DeviceShadowsTable;
  device_commands: DeviceCommandsTable;
  device_connection_stats: DeviceConnectionStatsTable;
  security_events: SecurityEventsTable;
  stations: StationsTable;
  manufacturer_cas: ManufacturerCasTable;
  batches: BatchesTable;
  manifest_devices: ManifestDevicesTable;
  enrollment_policies: EnrollmentPoliciesTable;
  claim_uses: ClaimUsesTable;
  model_provisioning: ModelProvisioningTable;
  reference_values: ReferenceValuesTable;
  attestation_nonces: AttestationNoncesTable;
  attestation_results: AttestationResultsTable;
  provisioning_transcripts: ProvisioningTranscriptsTable;
  tuf_metadata: TufMetadataTable;
  tuf_keys: TufKeysTable;
  tuf_signing_requests: TufSigningRequestsTable;
  update_artifacts: UpdateArtifactsTable;
  update_releases: UpdateReleasesTable;
  update_deltas: UpdateDeltasTable;
  update_content_keys: UpdateContentKeysTable;
  update_assignments: UpdateAssignmentsTable;
  director_roots: DirectorRootsTable;
  director_metadata: DirectorMetadataTable;
  update_receipts: UpdateReceiptsTable;
  deployments: DeploymentsTable;
  deployment_devices: DeploymentDevicesTable;
  deployment_events: DeploymentEventsTable;
}
