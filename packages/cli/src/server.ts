/**
 * The server package is large (HTTP server, database drivers, X.509); only `up`, the offline audit
 * verification and `config` need it. Loading it on demand keeps every other command quick to start.
 */
export const loadServer = () => import('@rampart/server');
