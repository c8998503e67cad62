/** Development helpers shared by the test suite and the benchmarks; not used by the running platform. */
export { startThrowawayPostgres, freePort, type ThrowawayPostgres } from './throwaway-postgres.js';
