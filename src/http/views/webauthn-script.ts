/**
 * The only script Portcullis pages run, served as /assets/webauthn.js from this server (CSP script-src 'self' on
 * the pages that load it; no inline script, no CDN). It calls the WebAuthn API (W3C WebAuthn Level 3 §5.1.3
 * create(), §5.1.4 get()) with the options the server put in the form's data-options attribute, encodes the answer
 * as JSON (base64url buffers, the shape of §5.1.8 toJSON()) into a hidden field and submits the form, so the server
 * checks everything and the page works as plain form posts.
 */
export const WEBAUTHN_SCRIPT = `(function () {
  'use strict';
  function toBuf(s) {
    var b64 = s.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function toB64u(buf) {
    var bytes = new Uint8Array(buf);
    var bin = '';
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
  }
  function descriptors(list) {
    return (list || []).map(function (c) {
      return { type: c.type || 'public-key', id: toBuf(c.id), transports: c.transports };
    });
  }
  function start() {
    var form = document.getElementById('passkey-form');
    var button = document.getElementById('passkey-button');
    var status = document.getElementById('passkey-status');
    if (!form || !button) return;
    if (!window.PublicKeyCredential || !navigator.credentials) {
      button.disabled = true;
      if (status) status.textContent = 'This browser cannot use passkeys.';
      return;
    }
    button.addEventListener('click', function () {
      var o = JSON.parse(form.getAttribute('data-options'));
      var register = form.getAttribute('data-mode') === 'register';
      var request;
      if (register) {
        o.challenge = toBuf(o.challenge);
        o.user.id = toBuf(o.user.id);
        o.excludeCredentials = descriptors(o.excludeCredentials);
        request = navigator.credentials.create({ publicKey: o });
      } else {
        o.challenge = toBuf(o.challenge);
        o.allowCredentials = descriptors(o.allowCredentials);
        request = navigator.credentials.get({ publicKey: o });
      }
      if (status) status.textContent = 'Waiting for your passkey…';
      button.disabled = true;
      request.then(function (cred) {
        var r = cred.response;
        var json = {
          id: cred.id,
          rawId: toB64u(cred.rawId),
          type: cred.type,
          authenticatorAttachment: cred.authenticatorAttachment || undefined,
          clientExtensionResults: cred.getClientExtensionResults(),
          response: register
            ? {
                clientDataJSON: toB64u(r.clientDataJSON),
                attestationObject: toB64u(r.attestationObject),
                transports: r.getTransports ? r.getTransports() : []
              }
            : {
                clientDataJSON: toB64u(r.clientDataJSON),
                authenticatorData: toB64u(r.authenticatorData),
                signature: toB64u(r.signature),
                userHandle: r.userHandle ? toB64u(r.userHandle) : undefined
              }
        };
        form.elements.namedItem('response').value = JSON.stringify(json);
        form.submit();
      }).catch(function (e) {
        button.disabled = false;
        if (status) status.textContent = 'The passkey was not used (' + (e && e.name ? e.name : 'error') + '). You can try again.';
      });
    });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
`;
