import type { Config } from '../../config/schema.ts';
import { html, type SafeHtml } from './html.ts';

export interface PageOptions {
  title: string;
  body: SafeHtml;
  config: Config;
  /** Loads /assets/webauthn.js (a file from this server: the CSP of such pages allows script-src 'self' only). */
  script?: boolean;
}

/** The common page: lang, viewport, one stylesheet (no inline style or script: the CSP forbids both). */
export function layout(o: PageOptions): string {
  const b = o.config.branding;
  return `<!doctype html>${
    html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${o.title} · ${b.name}</title>
<link rel="stylesheet" href="/assets/portcullis.css">
${o.script ? html`<script src="/assets/webauthn.js" defer></script>` : ''}
</head>
<body>
<main class="card">
<header class="brand">${b.logo_uri ? html`<img src="${b.logo_uri}" alt="" class="logo">` : ''}<span>${b.name}</span></header>
${o.body}
</main>
</body>
</html>
`.value
  }`;
}

/**
 * The stylesheet, generated once from the branding colours (validated as #rrggbb by the config schema, so they
 * cannot break out of the declaration).
 */
export function stylesheet(config: Config): string {
  const b = config.branding;
  return `:root{--primary:${b.primary_color};--bg:${b.background_color};--text:#1b1f24;--muted:#57606a;--danger:#b42318;--border:#d0d7de}
*{box-sizing:border-box}
html{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;font-size:16px;line-height:1.5;color:var(--text);background:var(--bg)}
body{margin:0;min-height:100vh;display:flex;align-items:flex-start;justify-content:center;padding:2rem 1rem}
.card{background:#fff;width:100%;max-width:28rem;border:1px solid var(--border);border-radius:12px;padding:2rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}
.brand{display:flex;align-items:center;gap:.75rem;font-weight:600;font-size:1.1rem;margin-bottom:1.5rem}
.logo{height:2rem;width:auto}
h1{font-size:1.4rem;margin:0 0 1rem}
p{margin:.5rem 0 1rem}
.muted{color:var(--muted);font-size:.95rem}
label{display:block;font-weight:600;margin:1rem 0 .35rem}
input[type=text],input[type=password],input[type=email]{width:100%;padding:.65rem .75rem;font-size:1rem;border:1px solid var(--border);border-radius:8px}
input:focus-visible,button:focus-visible,a:focus-visible{outline:3px solid var(--primary);outline-offset:2px}
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1.5rem}
button{font-size:1rem;padding:.65rem 1.2rem;border-radius:8px;border:1px solid var(--primary);cursor:pointer;font-weight:600}
button.primary{background:var(--primary);color:#fff}
button.secondary{background:#fff;color:var(--primary)}
a{color:var(--primary)}
.error{border-left:4px solid var(--danger);background:#fef3f2;color:var(--danger);padding:.75rem 1rem;border-radius:6px;margin:0 0 1rem}
ul.scopes{list-style:none;padding:0;margin:0 0 1rem}
ul.scopes li{padding:.6rem 0;border-bottom:1px solid var(--border)}
ul.scopes li:last-child{border-bottom:0}
.scope-name{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem;color:var(--muted)}
.client-logo{height:3rem;width:auto;display:block;margin-bottom:1rem}
.user-code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;letter-spacing:.15em;text-transform:uppercase}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9rem;word-break:break-all}
table{width:100%;border-collapse:collapse}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.qr{display:block;margin:0 auto 1rem;image-rendering:pixelated}
ul.recovery-codes{columns:2;list-style:none;padding:0}
.notice{border-left:4px solid var(--primary);background:#f0f6fc;padding:.75rem 1rem;border-radius:6px}
details{margin-top:1.5rem}
td{padding:.5rem 0;border-bottom:1px solid var(--border);vertical-align:top}
@media (max-width:480px){body{padding:0}.card{border-radius:0;border-left:0;border-right:0;min-height:100vh;padding:1.5rem 1.25rem}}
@media (prefers-reduced-motion:reduce){*{transition:none!important}}
`;
}
