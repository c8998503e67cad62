import type { ProvisioningService } from '../provisioning/service.js';
import type { UpdatesService } from '../updates/service.js';
import type { DeploymentEngine } from '../updates/deployments/engine.js';
import type { Logger } from '@rampart/shared/logging';
import type { Permission } from '@rampart/shared/access';
import type { AuthFailure, Principal, TokenService } from '../access/tokens.js';
import type { AuditLog } from '../audit/log.js';
import type { ServerConfig } from '../config/index.js';
import type { FleetRegistry } from '../fleet/registry.js';
import type { IdentityService } from '../identity/service.js';
import type { Gateway } from '../gateway/gateway.js';
import type { PolicyStore } from '../gateway/policies.js';
import type { ShadowService } from '../gateway/shadows.js';
import type { CommandService } from '../gateway/commands.js';
import type { KeyObject } from 'node:crypto';
import type { Storage, Tx } from '../storage/index.js';
import type { PlatformMetrics } from './metrics.js';

/** Everything the API's route plugins need, passed in rather than imported, so that tests can build it freely. */
export interface ApiContext {
  config: ServerConfig;
  storage: Storage;
  audit: AuditLog;
  auditPublicKey: KeyObject | null;
  tokens: TokenService;
  fleet: FleetRegistry;
  /** Absent in API tests that build the API without a CA. */
  identity?: IdentityService;
  /** Absent in API tests that build the API without a gateway. */
  policies?: PolicyStore;
  gateway?: Gateway;
  shadows?: ShadowService;
  commands?: CommandService;
  /** Absent in API tests that build the API without provisioning. */
  provisioning?: ProvisioningService;
  /** Absent in API tests that build the API without the release repository. */
  updates?: UpdatesService;
  /** Absent in API tests that build the API without deployments. */
  deployments?: DeploymentEngine;
  metrics: PlatformMetrics;
  logger: Logger;
  version: string;
}

/** What a state-changing handler returns from its transaction: the result and what the audit entry names. */
export interface Audited<T> {
  result: T;
  target: string;
  details?: Record<string, unknown>;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Permission required to call the route; routes without one are public (health, docs). */
    permission?: Permission | 'authenticated';
    /** Audit action for a state-changing route, e.g. `device.create`. */
    audit?: string;
  }
  interface FastifyRequest {
    principal: Principal | null;
    authFailure: AuthFailure | null;
    /** Set once the request's outcome is in the audit log, so that nothing is recorded twice. */
    audited: boolean;
    /** Target named in the failure entry when a state-changing request fails before its handler commits. */
    auditTarget: string | null;
    /** Run `work` in one transaction together with its audit entry (action from the route config). */
    mutate<T>(work: (tx: Tx) => Promise<Audited<T>>): Promise<T>;
  }
}

export function actorOf(principal: Principal | null): string {
  return principal ? `token:${principal.tokenId}` : 'anonymous';
}
