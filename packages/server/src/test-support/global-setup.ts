import type { TestProject } from 'vitest/node';
import { startThrowawayPostgres, type ThrowawayPostgres } from '../dev/throwaway-postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Admin URL of the PostgreSQL server tests create their databases on. */
    postgresUrl: string;
  }
}

let server: ThrowawayPostgres | null = null;

/** Use RAMPART_TEST_DATABASE_URL when given; otherwise start a throwaway PostgreSQL for the whole run. */
export async function setup(project: TestProject) {
  let url = process.env.RAMPART_TEST_DATABASE_URL;
  if (!url) {
    server = await startThrowawayPostgres();
    url = server.url;
  }
  project.provide('postgresUrl', url);
}

export async function teardown() {
  server?.stop();
}
