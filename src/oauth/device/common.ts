/** RFC 8628 §3.4: the grant_type a device polls the token endpoint with. */
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/**
 * A short, non-secret reference to a device authorization for events and logs: a prefix of the device_code's
 * stored hash. It correlates issued, verification, approval and redemption without revealing either code.
 */
export function deviceRef(deviceCodeHash: string): string {
  return deviceCodeHash.slice(0, 16);
}
