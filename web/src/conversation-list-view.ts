/**
 * The conversations column: a form to start a chat (email + intent) and the list of sessions with
 * their last message, unread badge and the peer's presence (a dot, and "last seen"), most recent first.
 */
import type { Presence, SessionSummary } from '../../client/index.js';
import { h, reconcile } from './dom.js';
import { preview, presenceText, shortTime } from './format.js';

export interface ConversationListCallbacks {
  open(sessionId: string): void;
  start(email: string, intent: string): Promise<void>;
}

export class ConversationListView {
  readonly element: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly empty: HTMLElement;
  private readonly items = new Map<string, HTMLLIElement>();
  private readonly startError: HTMLElement;
  private readonly startEmail: HTMLInputElement;

  constructor(private readonly callbacks: ConversationListCallbacks) {
    this.startEmail = h('input', { id: 'start-email', name: 'email', type: 'email', required: true, autocomplete: 'off', 'aria-describedby': 'start-error' });
    const intent = h('input', { id: 'start-intent', name: 'intent', type: 'text', required: true, value: 'dating', maxlength: 64, list: 'intents', 'aria-describedby': 'start-error' });
    const intents = h('datalist', { id: 'intents' }, h('option', { value: 'dating' }), h('option', { value: 'friendship' }), h('option', { value: 'business' }));
    const submit = h('button', { type: 'submit' }, 'Start chat');
    this.startError = h('p', { id: 'start-error', class: 'form-error', role: 'alert' });
    const form = h(
      'form',
      { class: 'start-chat', 'aria-labelledby': 'start-title' },
      h('h2', { id: 'start-title' }, 'Start a chat'),
      h('label', { for: 'start-email' }, 'Their email'),
      this.startEmail,
      h('label', { for: 'start-intent' }, 'Intent'),
      intent,
      intents,
      submit,
      this.startError,
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.startError.textContent = '';
      submit.disabled = true;
      callbacks
        .start(this.startEmail.value.trim(), intent.value.trim())
        .then(() => form.reset())
        .catch((err: unknown) => {
          this.startError.textContent = err instanceof Error ? err.message : String(err);
          this.startEmail.focus();
        })
        .finally(() => (submit.disabled = false));
    });

    this.list = h('ul', { class: 'conversations', 'aria-labelledby': 'conversations-title' });
    this.empty = h('p', { class: 'hint' }, 'No conversations yet. Start one above.');
    this.element = h('aside', { class: 'sidebar', 'aria-label': 'Conversations' }, form, h('h2', { id: 'conversations-title' }, 'Conversations'), this.empty, this.list);
  }

  focusStart(): void {
    this.startEmail.focus();
  }

  showStartError(message: string): void {
    this.startError.textContent = message;
  }

  /** `presenceOf`: what is known of a peer's presence (undefined: not known yet). */
  render(sessions: readonly SessionSummary[], activeId: string | undefined, presenceOf: (email: string) => Presence | undefined = () => undefined): void {
    const sorted = [...sessions].sort((a, b) => activity(b).localeCompare(activity(a)));
    this.empty.hidden = sorted.length > 0;
    const rows = sorted.map((s) => this.row(s, s.sessionId === activeId, presenceOf(s.peer.email)));
    for (const id of [...this.items.keys()]) if (!sessions.some((s) => s.sessionId === id)) this.items.delete(id);
    reconcile(this.list, rows);
  }

  private row(session: SessionSummary, active: boolean, presence: Presence | undefined): HTMLLIElement {
    let item = this.items.get(session.sessionId);
    if (!item) {
      item = h('li', { class: 'conversation' });
      this.items.set(session.sessionId, item);
    }
    const name = session.peer.displayName || session.peer.email;
    const last = session.lastMessage;
    const lastText = last ? `${last.senderEmail === session.me.email ? 'You: ' : ''}${(last.deleted ? 'Message deleted' : preview(last.content))}` : 'No messages yet';
    const badge =
      session.unreadCount > 0
        ? h('span', { class: 'badge', 'aria-label': `${session.unreadCount} unread` }, session.unreadCount > 99 ? '99+' : session.unreadCount)
        : null;
    const button = h(
      'button',
      { type: 'button', class: 'conversation__button', 'aria-current': active ? 'true' : undefined, 'data-session-id': session.sessionId },
      h(
        'span',
        { class: 'conversation__top' },
        presenceDot(presence),
        h('span', { class: 'conversation__name' }, name),
        h('span', { class: 'intent' }, session.intent),
        session.blockedByMe ? h('span', { class: 'intent blocked-tag' }, 'blocked') : null,
        badge,
      ),
      h('span', { class: 'conversation__last' }, lastText),
      presence ? h('span', { class: 'conversation__presence' }, presenceText(presence)) : null,
      last ? h('time', { class: 'conversation__time', datetime: last.sentAt }, shortTime(last.sentAt)) : null,
    );
    button.addEventListener('click', () => this.callbacks.open(session.sessionId));
    const hadFocus = item.contains(document.activeElement);
    item.replaceChildren(button);
    if (hadFocus) button.focus();
    return item;
  }
}

const activity = (s: SessionSummary): string => s.lastMessage?.sentAt ?? s.createdAt;

/** A dot, green while online; its label says the same in words for screen readers. */
export function presenceDot(presence: Presence | undefined): HTMLElement {
  const state = presence === undefined ? 'unknown' : presence.online ? 'online' : 'offline';
  return h('span', { class: `presence-dot presence-dot--${state}`, role: 'img', 'aria-label': presence ? presenceText(presence) : 'Presence unknown', 'data-presence': state });
}
