/**
 * Sign in: with the embedded default's development token issuer (email + display name), or by
 * pasting a token issued elsewhere. Resolves with a sign-in the service has accepted.
 */
import { ChatApi, ChatClientError, fetchDevToken } from '../../client/index.js';
import { h } from './dom.js';
import { describeError } from './notices.js';
import type { SignIn } from './sign-in-store.js';

export function renderSignIn(container: HTMLElement, baseUrl: string, onSignedIn: (signIn: SignIn) => void, notice?: string): void {
  const status = h('p', { class: 'form-error', role: 'alert', id: 'sign-in-error' }, notice ?? '');

  const email = h('input', { id: 'sign-in-email', name: 'email', type: 'email', required: true, autocomplete: 'email', 'aria-describedby': 'sign-in-error' });
  const displayName = h('input', { id: 'sign-in-name', name: 'displayName', type: 'text', maxlength: 100, autocomplete: 'nickname' });
  const devButton = h('button', { type: 'submit' }, 'Sign in');
  const devForm = h(
    'form',
    { class: 'card', 'aria-labelledby': 'dev-sign-in-title' },
    h('h2', { id: 'dev-sign-in-title' }, 'Sign in'),
    h('p', { class: 'hint' }, 'With the development token issuer of the embedded default.'),
    h('label', { for: 'sign-in-email' }, 'Email'),
    email,
    h('label', { for: 'sign-in-name' }, 'Display name ', h('span', { class: 'optional' }, '(optional)')),
    displayName,
    devButton,
  );

  const token = h('textarea', { id: 'sign-in-token', name: 'token', rows: 3, required: true, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'sign-in-error' });
  const tokenButton = h('button', { type: 'submit' }, 'Use this token');
  const tokenForm = h(
    'form',
    { class: 'card', 'aria-labelledby': 'token-sign-in-title' },
    h('h2', { id: 'token-sign-in-title' }, 'Or paste a token'),
    h('p', { class: 'hint' }, 'A JWT from your identity provider, for a service running with production auth.'),
    h('label', { for: 'sign-in-token' }, 'Token'),
    token,
    tokenButton,
  );

  container.replaceChildren(h('section', { class: 'sign-in', 'aria-label': 'Sign in' }, devForm, tokenForm, status));
  email.focus();

  const busy = (on: boolean) => {
    devButton.disabled = on;
    tokenButton.disabled = on;
  };

  devForm.addEventListener('submit', (event) => {
    event.preventDefault();
    status.textContent = '';
    busy(true);
    const name = displayName.value.trim();
    fetchDevToken(baseUrl, email.value.trim(), name || undefined)
      .then(() => onSignedIn({ kind: 'dev', email: email.value.trim(), displayName: name }))
      .catch((err: unknown) => {
        busy(false);
        if (err instanceof ChatClientError && (err.status === 404 || err.code === 'ROUTE_NOT_FOUND')) {
          status.textContent = 'This service does not issue development tokens (it runs with production auth). Paste a token instead.';
          token.focus();
        } else {
          status.textContent = `Could not sign in: ${describeError(err as Error)}`;
          email.focus();
        }
      });
  });

  tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    status.textContent = '';
    busy(true);
    const value = token.value.trim().replace(/^Bearer\s+/i, '');
    // One authenticated call proves the token before the page relies on it.
    new ChatApi({ baseUrl, tokenProvider: async () => value })
      .listSessions()
      .then(() => onSignedIn({ kind: 'token', token: value }))
      .catch((err: unknown) => {
        busy(false);
        status.textContent =
          err instanceof ChatClientError && err.code === 'UNAUTHENTICATED'
            ? `The service did not accept that token: ${err.message}.`
            : `Could not check the token: ${describeError(err as Error)}`;
        token.focus();
      });
  });
}
