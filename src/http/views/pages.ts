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
