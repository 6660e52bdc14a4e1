import type { Config } from '../../config/schema.ts';
import type { ClientRecord, ConsentRecord } from '../../storage/ports.ts';
import { html, type SafeHtml } from './html.ts';
import { layout } from './layout.ts';

/** What OpenID Connect scopes mean, in words a person understands (OIDC Core §5.4, §11). */
const OIDC_SCOPE_TEXT: Record<string, string> = {
  openid: 'Sign you in and know who you are',
  profile: 'See your name',
  email: 'See your email address',
  offline_access: 'Keep access while you are away (until you withdraw it)',
};

export function scopeDescription(config: Config, scope: string): string {
  const oidc = OIDC_SCOPE_TEXT[scope];
  if (oidc) return oidc;
  for (const r of config.resources) {
    const d = r.scope_descriptions[scope];
    if (d) return d;
  }
  return scope;
}

export function resourceName(config: Config, identifier: string): string {
  return config.resources.find((r) => r.identifier === identifier)?.name ?? identifier;
}

const clientName = (c: ClientRecord | undefined) => c?.client_name ?? c?.client_id ?? '';

export function loginPage(o: {
  config: Config;
  csrf: string;
  returnTo: string;
  username?: string | undefined;
  error?: string | undefined;
  client?: ClientRecord | undefined;
}): string {
  const body = html`<h1>Sign in</h1>
${o.client ? html`<p class="muted">to continue to <strong>${clientName(o.client)}</strong></p>` : ''}
${o.error ? html`<div class="error" role="alert" id="login-error">${o.error}</div>` : ''}
<form method="post" action="/login" novalidate>
<input type="hidden" name="csrf_token" value="${o.csrf}">
<input type="hidden" name="return_to" value="${o.returnTo}">
<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required value="${o.username ?? ''}"${o.username ? '' : html` autofocus`}${o.error ? html` aria-describedby="login-error"` : ''}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required${o.username ? html` autofocus` : ''}>
<div class="actions"><button type="submit" class="primary">Sign in</button></div>
</form>`;
  return layout({ title: 'Sign in', body, config: o.config });
}

export function consentPage(o: {
  config: Config;
  csrf: string;
  client: ClientRecord;
  scopes: string[];
  resources: string[];
  requestUri: string;
  username: string;
}): string {
  const logo = typeof o.client.metadata.logo_uri === 'string' ? o.client.metadata.logo_uri : undefined;
  const links: SafeHtml[] = [];
  for (const [k, label] of [
    ['client_uri', 'Website'],
    ['policy_uri', 'Privacy policy'],
    ['tos_uri', 'Terms'],
  ] as const) {
    const u = o.client.metadata[k];
    if (typeof u === 'string' && /^https:\/\//.test(u))
      links.push(html`<a href="${u}" rel="noopener noreferrer">${label}</a> `);
  }
  const body = html`${logo ? html`<img src="${logo}" alt="${clientName(o.client)} logo" class="client-logo">` : ''}
<h1><strong>${clientName(o.client)}</strong> wants to access your account</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
<p>It asks to:</p>
<ul class="scopes">
${o.scopes.map((s) => html`<li>${scopeDescription(o.config, s)}<br><span class="scope-name">${s}</span></li>`)}
</ul>
${
  o.resources.length
    ? html`<p>on ${o.resources.map((r, i) => html`${i ? ', ' : ''}<strong>${resourceName(o.config, r)}</strong> <span class="scope-name">(${r})</span>`)}</p>`
    : ''
}
${links.length ? html`<p class="muted">${links}</p>` : ''}
<form method="post" action="/consent">
<input type="hidden" name="csrf_token" value="${o.csrf}">
<input type="hidden" name="client_id" value="${o.client.client_id}">
<input type="hidden" name="request_uri" value="${o.requestUri}">
<div class="actions">
<button type="submit" name="decision" value="approve" class="primary" autofocus>Allow</button>
<button type="submit" name="decision" value="deny" class="secondary">Deny</button>
</div>
</form>
<p class="muted">You can withdraw this at any time on <a href="/account/consents">your connected apps</a> page.</p>`;
  return layout({ title: 'Allow access', body, config: o.config });
}

export function errorPage(o: { config: Config; error: string; description: string }): string {
  const body = html`<h1>Something went wrong</h1>
<div class="error" role="alert"><p>${o.description}</p></div>
<p class="muted">Error code: <code>${o.error}</code>. If you followed a link from an application, go back to it and try again.</p>`;
  return layout({ title: 'Error', body, config: o.config });
}

export function logoutConfirmPage(o: {
  config: Config;
  csrf: string;
  client: ClientRecord | undefined;
  params: Record<string, string>;
}): string {
  const body = html`<h1>Sign out?</h1>
${o.client ? html`<p><strong>${clientName(o.client)}</strong> asks to sign you out of ${o.config.branding.name}.</p>` : html`<p>Sign out of ${o.config.branding.name} on this browser?</p>`}
<form method="post" action="/logout">
<input type="hidden" name="csrf_token" value="${o.csrf}">
${Object.entries(o.params).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}
<div class="actions"><button type="submit" class="primary" autofocus>Sign out</button></div>
</form>`;
  return layout({ title: 'Sign out', body, config: o.config });
}

export function loggedOutPage(o: { config: Config }): string {
  const body = html`<h1>You are signed out</h1><p>You can close this window.</p>`;
  return layout({ title: 'Signed out', body, config: o.config });
}

export function consentsPage(o: {
  config: Config;
  csrf: string;
  username: string;
  consents: Array<{ consent: ConsentRecord; client: ClientRecord | undefined }>;
  message?: string | undefined;
}): string {
  const body = html`<h1>Connected apps</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
${o.message ? html`<p role="status">${o.message}</p>` : ''}
${
  o.consents.length === 0
    ? html`<p>No application has access to your account.</p>`
    : html`<table><tbody>${o.consents.map(
        ({ consent, client }) => html`<tr><td><strong>${clientName(client) || consent.client_id}</strong><br>
<span class="muted">${consent.scope
          .split(' ')
          .map((s) => scopeDescription(o.config, s))
          .join('; ')}</span></td>
<td><form method="post" action="/account/consents/withdraw">
<input type="hidden" name="csrf_token" value="${o.csrf}">
<input type="hidden" name="client_id" value="${consent.client_id}">
<button type="submit" class="secondary" aria-label="Withdraw access for ${clientName(client) || consent.client_id}">Withdraw</button>
</form></td></tr>`,
      )}</tbody></table>`
}
<form method="post" action="/logout"><input type="hidden" name="csrf_token" value="${o.csrf}"><div class="actions"><button type="submit" class="secondary">Sign out</button></div></form>`;
  return layout({ title: 'Connected apps', body, config: o.config });
}

/** RFC 8628 §3.3: where the person types the code their device shows. */
export function deviceEntryPage(o: {
  config: Config;
  csrf: string;
  username: string;
  userCode?: string | undefined;
  error?: string | undefined;
}): string {
  const body = html`<h1>Connect a device</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
${
  o.userCode
    ? html`<p>Check that this code is the one shown on your device, then continue.</p>`
    : html`<p>Enter the code shown on your device.</p>`
}
${o.error ? html`<div class="error" role="alert" id="code-error">${o.error}</div>` : ''}
<form method="post" action="/device" novalidate>
<input type="hidden" name="csrf_token" value="${o.csrf}">
<label for="user_code">Code</label>
<input type="text" id="user_code" name="user_code" class="user-code" autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="20" placeholder="XXXX-XXXX" required autofocus value="${o.userCode ?? ''}"${o.error ? html` aria-describedby="code-error"` : ''}>
<div class="actions"><button type="submit" class="primary">Continue</button></div>
</form>
<p class="muted">Only enter a code from a device you are setting up yourself. Nobody from ${o.config.branding.name} will ever ask you for one.</p>`;
  return layout({ title: 'Connect a device', body, config: o.config });
}

/** The device's request, for approve or deny (RFC 8628 §5.4: show who asks for what, and the code to compare). */
export function deviceConfirmPage(o: {
  config: Config;
  csrf: string;
  client: ClientRecord;
  scopes: string[];
  resources: string[];
  userCode: string;
  requestUri: string;
  username: string;
}): string {
  const logo = typeof o.client.metadata.logo_uri === 'string' ? o.client.metadata.logo_uri : undefined;
  const body = html`${logo ? html`<img src="${logo}" alt="${clientName(o.client)} logo" class="client-logo">` : ''}
<h1><strong>${clientName(o.client)}</strong> on a device wants to access your account</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
<p>Code: <strong class="user-code">${o.userCode}</strong>. Allow only if your device shows this same code and you started the sign-in yourself.</p>
<p>It asks to:</p>
<ul class="scopes">
${o.scopes.map((s) => html`<li>${scopeDescription(o.config, s)}<br><span class="scope-name">${s}</span></li>`)}
</ul>
${
  o.resources.length
    ? html`<p>on ${o.resources.map((r, i) => html`${i ? ', ' : ''}<strong>${resourceName(o.config, r)}</strong> <span class="scope-name">(${r})</span>`)}</p>`
    : ''
}
<form method="post" action="/device/confirm">
<input type="hidden" name="csrf_token" value="${o.csrf}">
<input type="hidden" name="request_uri" value="${o.requestUri}">
<div class="actions">
<button type="submit" name="decision" value="approve" class="primary">Allow</button>
<button type="submit" name="decision" value="deny" class="secondary">Deny</button>
</div>
</form>
<p class="muted">You can withdraw this at any time on <a href="/account/consents">your connected apps</a> page.</p>`;
  return layout({ title: 'Allow a device', body, config: o.config });
}

export function deviceDonePage(o: { config: Config; approved: boolean }): string {
  const body = o.approved
    ? html`<h1>Device connected</h1><p role="status">You can return to your device; it will continue by itself.</p>`
    : html`<h1>Request denied</h1><p role="status">The device was not given access. You can close this window.</p>`;
  return layout({ title: o.approved ? 'Device connected' : 'Request denied', body, config: o.config });
}

const hiddenReturn = (returnTo: string | undefined) =>
  returnTo ? html`<input type="hidden" name="return_to" value="${returnTo}">` : '';

/** The second step of sign-in (NIST SP 800-63B-4 AAL2/AAL3): a code from the app, a passkey, or a recovery code. */
export function mfaPage(o: {
  config: Config;
  csrf: string;
  username: string;
  returnTo: string;
  /** 3: only a passkey will do (phishing-resistant). */
  level: number;
  totp: boolean;
  passkeyOptions: string | undefined;
  recoveryCodes: number;
  error?: string | undefined;
}): string {
  const onlyPasskey = o.level >= 3;
  const body = html`<h1>Confirm it is you</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
${o.error ? html`<div class="error" role="alert" id="mfa-error">${o.error}</div>` : ''}
${
  onlyPasskey
    ? html`<p>This application needs a passkey: a code from an app is not enough for what it asks.</p>`
    : html`<p>Your account is protected with a second step.</p>`
}
${
  o.totp && !onlyPasskey
    ? html`<form method="post" action="/mfa/totp" novalidate>
<input type="hidden" name="csrf_token" value="${o.csrf}">
${hiddenReturn(o.returnTo)}
<label for="code">Code from your authenticator app</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]*" maxlength="6" required autofocus${o.error ? html` aria-describedby="mfa-error"` : ''}>
<div class="actions"><button type="submit" class="primary">Verify</button></div>
</form>`
    : ''
}
${
  o.passkeyOptions
    ? html`<form method="post" action="/mfa/passkey" id="passkey-form" data-mode="authenticate" data-options="${o.passkeyOptions}">
<input type="hidden" name="csrf_token" value="${o.csrf}">
${hiddenReturn(o.returnTo)}
<input type="hidden" name="response" value="">
<div class="actions"><button type="button" id="passkey-button" class="${o.totp && !onlyPasskey ? 'secondary' : 'primary'}">Use a passkey</button></div>
<p class="muted" id="passkey-status" role="status"></p>
</form>`
    : onlyPasskey
      ? html`<p>You have no passkey yet. <a href="/account/security?return_to=${encodeURIComponent(o.returnTo)}">Add one</a> after confirming with your current factor.</p>`
      : ''
}
${
  o.recoveryCodes > 0 && !onlyPasskey
    ? html`<details><summary>Use a recovery code</summary>
<form method="post" action="/mfa/recovery" novalidate>
<input type="hidden" name="csrf_token" value="${o.csrf}">
${hiddenReturn(o.returnTo)}
<label for="recovery_code">Recovery code</label>
<input type="text" id="recovery_code" name="code" autocomplete="off" autocapitalize="none" spellcheck="false" maxlength="20" placeholder="xxxx-xxxx-xxxx">
<div class="actions"><button type="submit" class="secondary">Use recovery code</button></div>
</form></details>`
    : ''
}`;
  return layout({ title: 'Confirm it is you', body, config: o.config, script: !!o.passkeyOptions });
}

/** The account page where people manage their factors. */
export function securityPage(o: {
  config: Config;
  csrf: string;
  username: string;
  returnTo: string | undefined;
  totp: boolean;
  passkeys: Array<{ id: string; name: string; created_at: number; last_used_at: number | null }>;
  recoveryCodes: number;
  passkeyOptions: string;
  message?: string | undefined;
  required?: boolean;
}): string {
  const date = (ms: number | null) => (ms === null ? 'never' : new Date(ms).toISOString().slice(0, 10));
  const rt = hiddenReturn(o.returnTo);
  const rtQuery = o.returnTo ? `?return_to=${encodeURIComponent(o.returnTo)}` : '';
  const body = html`<h1>Sign-in security</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
${o.message ? html`<p role="status" class="notice">${o.message}</p>` : ''}
${o.required ? html`<div class="error" role="alert">This sign-in needs a second factor. Set one up below to continue.</div>` : ''}
<h2>Authenticator app</h2>
${
  o.totp
    ? html`<p>An authenticator app gives you codes. <span class="muted">(TOTP)</span></p>
<form method="post" action="/account/security/totp/remove"><input type="hidden" name="csrf_token" value="${o.csrf}">${rt}
<button type="submit" class="secondary" aria-label="Remove the authenticator app">Remove</button></form>`
    : html`<p>Not set up.</p><p><a href="/account/security/totp${rtQuery}" id="setup-totp">Set up an authenticator app</a></p>`
}
<h2>Passkeys</h2>
${
  o.passkeys.length
    ? html`<table><tbody>${o.passkeys.map(
        (
          p,
        ) => html`<tr><td><strong>${p.name}</strong><br><span class="muted">Added ${date(p.created_at)}, last used ${date(p.last_used_at)}</span></td>
<td><form method="post" action="/account/security/passkeys/remove"><input type="hidden" name="csrf_token" value="${o.csrf}">${rt}
<input type="hidden" name="id" value="${p.id}">
<button type="submit" class="secondary" aria-label="Remove passkey ${p.name}">Remove</button></form></td></tr>`,
      )}</tbody></table>`
    : html`<p>No passkey yet.</p>`
}
<form method="post" action="/account/security/passkeys" id="passkey-form" data-mode="register" data-options="${o.passkeyOptions}">
<input type="hidden" name="csrf_token" value="${o.csrf}">${rt}
<input type="hidden" name="response" value="">
<label for="passkey-name">Name for a new passkey</label>
<input type="text" id="passkey-name" name="name" maxlength="64" placeholder="e.g. Laptop" autocomplete="off">
<div class="actions"><button type="button" id="passkey-button" class="primary">Add a passkey</button></div>
<p class="muted" id="passkey-status" role="status"></p>
</form>
<h2>Recovery codes</h2>
<p>${o.recoveryCodes ? `${o.recoveryCodes} unused recovery code(s) left.` : 'No recovery codes.'} Each code works once, if you lose your other factors.</p>
<form method="post" action="/account/security/recovery-codes"><input type="hidden" name="csrf_token" value="${o.csrf}">${rt}
<div class="actions"><button type="submit" class="secondary">${o.recoveryCodes ? 'Replace recovery codes' : 'Create recovery codes'}</button></div></form>
${o.returnTo && !o.required ? html`<p><a href="${o.returnTo}">Continue</a></p>` : ''}
<p class="muted"><a href="/account/consents">Connected apps</a></p>`;
  return layout({ title: 'Sign-in security', body, config: o.config, script: true });
}

/** TOTP enrolment: the QR code (an SVG data: URI made on the server), the secret as text, and the first code. */
export function totpEnrolPage(o: {
  config: Config;
  csrf: string;
  username: string;
  returnTo: string | undefined;
  qrDataUri: string;
  secret: string;
  error?: string | undefined;
}): string {
  const grouped = o.secret.match(/.{1,4}/g)?.join(' ') ?? o.secret;
  const body = html`<h1>Set up an authenticator app</h1>
<p class="muted">Signed in as <strong>${o.username}</strong></p>
<p>Scan this code with your authenticator app, then type the 6-digit code it shows.</p>
<img src="${o.qrDataUri}" alt="QR code for your authenticator app" class="qr" width="200" height="200">
<p class="muted">Cannot scan? Enter this key: <code id="totp-secret">${grouped}</code></p>
${o.error ? html`<div class="error" role="alert" id="totp-error">${o.error}</div>` : ''}
<form method="post" action="/account/security/totp" novalidate>
<input type="hidden" name="csrf_token" value="${o.csrf}">${hiddenReturn(o.returnTo)}
<label for="code">Code from the app</label>
<input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" required autofocus${o.error ? html` aria-describedby="totp-error"` : ''}>
<div class="actions"><button type="submit" class="primary">Confirm</button></div>
</form>
<p class="muted"><a href="/account/security">Back</a></p>`;
  return layout({ title: 'Set up an authenticator app', body, config: o.config });
}

/** New recovery codes, shown this once (only their hashes are kept). */
export function recoveryCodesPage(o: { config: Config; codes: string[]; returnTo: string | undefined }): string {
  const body = html`<h1>Your recovery codes</h1>
<p>Keep these somewhere safe. Each works once, if you lose your phone or passkeys. They will not be shown again.</p>
<ul class="recovery-codes">${o.codes.map((c) => html`<li><code>${c}</code></li>`)}</ul>
<p><a href="/account/security${o.returnTo ? `?return_to=${encodeURIComponent(o.returnTo)}` : ''}">I have saved them</a></p>`;
  return layout({ title: 'Recovery codes', body, config: o.config });
}
