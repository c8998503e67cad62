import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  level?: string;
  format?: LogFormat;
  name?: string;
  /** Where log lines go; standard error by default so that standard output stays free for results. */
  destination?: DestinationStream | NodeJS.WritableStream;
}

/**
 * Paths that must never reach a log line. Pino replaces them with "[redacted]" wherever they appear,
 * so a careless `log.info({ req })` or `log.info(config)` cannot leak a token or passphrase.
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'authorization',
  'token',
  'secret',
  'password',
  'passphrase',
  '*.token',
  '*.secret',
  '*.password',
  '*.passphrase',
  'keyPem',
  '*.keyPem',
  'pin',
  '*.pin',
  'database.url',
  '*.database.url',
];

/** The one logger factory: structured pino logs, secrets redacted. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? 'json';
  const destination =
    options.destination ??
    (format === 'pretty'
      ? pretty({
          destination: 2,
          sync: true,
          colorize: process.stderr.isTTY,
          translateTime: 'SYS:standard',
          ignore: 'pid,hostname',
        })
      : pino.destination({ dest: 2, sync: true }));
  return pino(
    {
      name: options.name ?? 'rampart',
      level: options.level ?? 'info',
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as DestinationStream,
  );
}
