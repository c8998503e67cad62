export * from './load/index.js';
export { deviceKeyAndCsr, enrollDevices, type EnrollOptions, type EnrollmentJob } from './enroll.js';
