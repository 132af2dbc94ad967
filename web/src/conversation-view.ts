/**
 * One open conversation: its history (paging back with the `before` cursor as the user scrolls
 * up), the peer's presence, live messages, my sends with their sending/sent/delivered/seen ticks,
 * the peer's typing indicator, the composer (Enter sends, Shift+Enter is a new line), and in its
 * header Block / Unblock and Report (the conversation, with the peer's latest message shown).
 *
 * Messages are kept by seq and drawn in seq order, so history pages, live events and acks can
 * arrive in any order and never show twice. My sends are keyed by clientMessageId, so the bubble
 * drawn at once for a send becomes the stored message in place when the service acknowledges it.
 * Edits and deletes replace the message with their seq in place: an "edited" marker, or a "Message
 * deleted" placeholder. My own messages have Edit and Delete buttons; Edit turns the bubble into a
 * small form (Enter saves, Escape cancels).
 */
import type { ChatClient, ChatMessage, Presence, Receipt, SessionInfo, TypingSignal } from '../../client/index.js';
import { h, reconcile } from './dom.js';
import { fullTime, presenceText, shortTime } from './format.js';
import { presenceDot } from './conversation-list-view.js';
import { describeError } from './notices.js';

const PAGE = 30;
const TYPING_SEND_EVERY_MS = 2500;
const TYPING_IDLE_MS = 3000;
const TYPING_SHOWN_MS = 6000;
const NEAR_BOTTOM_PX = 80;

interface Outgoing {
  clientMessageId: string;
  content: string;
  state: 'sending' | 'failed';
  error?: string;
  createdAt: string;
}

export interface ConversationCallbacks {
  /** The user has read the peer's messages up to this seq. */
  seen(sessionId: string, upToSeq: number): void;
  /** The user blocked or unblocked the conversation. */
  blockChanged(sessionId: string, blocked: boolean): void;
}

export class ConversationView {
  readonly element: HTMLElement;
  private session: SessionInfo | undefined;
  private readonly messages = new Map<number, ChatMessage>();
  private readonly outgoing = new Map<string, Outgoing>();
  private readonly nodes = new Map<string, HTMLLIElement>();
  /** The seq of my message being edited, if any. */
  private editing: number | undefined;
  private olderCursor: number | null = null;
  private loadingOlder = false;
  private openCount = 0;
  private lastSeenSent = 0;
  private typingSentAt = 0;
  private typingIdle: ReturnType<typeof setTimeout> | undefined;
  private typingHide: ReturnType<typeof setTimeout> | undefined;

  private readonly title = h('h2', { id: 'conversation-title' });
  private readonly subtitle = h('p', { class: 'conversation-pane__subtitle' });
  private readonly presenceLine = h('p', { class: 'conversation-pane__presence', 'aria-live': 'polite' });
  private readonly scroller = h('div', { class: 'messages', tabindex: '0', 'aria-label': 'Messages' });
  private readonly olderButton = h('button', { type: 'button', class: 'load-older link-button' }, 'Load older messages');
  private readonly olderStatus = h('p', { class: 'hint load-older-status', 'aria-live': 'polite' });
  private readonly list = h('ol', { class: 'message-list', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-labelledby': 'conversation-title' });
  private readonly typingLine = h('p', { class: 'typing', 'aria-live': 'polite' });
  private readonly input = h('textarea', { id: 'composer-input', name: 'message', rows: 2, maxlength: 4000, placeholder: 'Write a message…', 'aria-describedby': 'composer-hint' });
  private readonly sendButton = h('button', { type: 'submit' }, 'Send');
  private readonly placeholder = h('p', { class: 'placeholder' }, 'Choose a conversation, or start a new one.');
  private readonly blockButton = h('button', { type: 'button', class: 'link-button', id: 'block-toggle' }, 'Block');
  private readonly reportButton = h('button', { type: 'button', class: 'link-button', id: 'report-open' }, 'Report');
  private readonly reportReason = h('textarea', { id: 'report-reason', name: 'reason', rows: 2, maxlength: 1000, required: true, placeholder: 'What is wrong?' });
  private readonly reportForm = h(
    'form',
    { class: 'report-form', 'aria-label': 'Report this conversation', hidden: true },
    h('label', { for: 'report-reason' }, 'Report this conversation (with their latest message shown) to moderators'),
    this.reportReason,
    h('span', { class: 'report-form__buttons' }, h('button', { type: 'submit' }, 'Send report'), h('button', { type: 'button', class: 'link-button', id: 'report-cancel' }, 'Cancel')),
  );
  private readonly safetyStatus = h('p', { class: 'hint safety-status', role: 'status', 'aria-live': 'polite' });
  private blocked = false;
  private readonly pane: HTMLElement;

  constructor(
    private readonly client: ChatClient,
    private readonly callbacks: ConversationCallbacks,
  ) {
    const composer = h(
      'form',
      { class: 'composer', 'aria-label': 'Send a message' },
      h('label', { for: 'composer-input', class: 'visually-hidden' }, 'Message'),
      this.input,
      this.sendButton,
      h('p', { id: 'composer-hint', class: 'visually-hidden' }, 'Enter sends, Shift+Enter starts a new line.'),
    );
    this.scroller.append(this.olderButton, this.olderStatus, this.list);
    this.pane = h(
      'section',
      { class: 'conversation-pane', 'aria-labelledby': 'conversation-title', hidden: true },
      h(
        'header',
        { class: 'conversation-pane__header' },
        h('div', { class: 'conversation-pane__heading' }, this.title, this.presenceLine, this.subtitle),
        h('div', { class: 'conversation-pane__actions' }, this.blockButton, this.reportButton),
      ),
      this.reportForm,
      this.safetyStatus,
      this.scroller,
      this.typingLine,
      composer,
    );
    this.element = h('div', { class: 'conversation-column' }, this.placeholder, this.pane);

    composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    this.input.addEventListener('input', () => this.typed());
    this.olderButton.addEventListener('click', () => void this.loadOlder());
    this.blockButton.addEventListener('click', () => void this.toggleBlock());
    this.reportButton.addEventListener('click', () => {
      this.reportForm.hidden = false;
      this.reportReason.focus();
    });
    this.reportForm.querySelector('#report-cancel')!.addEventListener('click', () => this.closeReport());
    this.reportForm.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.sendReport();
    });
    // One listener for every message's buttons and edit form: rows are redrawn, the list stays.
    this.list.addEventListener('click', (event) => this.messageAction(event));
    this.list.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.saveEdit();
    });
    this.list.addEventListener('keydown', (event) => {
      if (!(event.target instanceof HTMLTextAreaElement)) return;
      if (event.key === 'Escape') this.cancelEdit();
      else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        void this.saveEdit();
      }
    });
    this.scroller.addEventListener('scroll', () => {
      if (this.scroller.scrollTop < 40 && this.olderCursor !== null) void this.loadOlder();
    });
  }

  /** Shows the peer's presence in the header (undefined: not known yet). */
  showPresence(presence: Presence | undefined): void {
    this.presenceLine.replaceChildren(...(presence ? [presenceDot(presence), ` ${presenceText(presence)}`] : []));
  }

  get peerEmail(): string | undefined {
    return this.session?.peer.email;
  }

  get sessionId(): string | undefined {
    return this.session?.sessionId;
  }

  /** Shows a conversation: the newest page of history, then live from there. */
  async open(session: SessionInfo & { blockedByMe?: boolean }): Promise<void> {
    if (this.session) this.leave();
    const opening = ++this.openCount;
    this.session = session;
    this.messages.clear();
    this.outgoing.clear();
    this.nodes.clear();
    this.list.replaceChildren();
    this.olderCursor = null;
    this.editing = undefined;
    this.lastSeenSent = 0;
    this.typingLine.textContent = '';
    this.title.textContent = session.peer.displayName || session.peer.email;
    this.showPresence(undefined);
    this.subtitle.textContent = session.peer.displayName && session.peer.displayName !== session.peer.email ? `${session.peer.email} · ${session.intent}` : session.intent;
    this.placeholder.hidden = true;
    this.pane.hidden = false;
    this.closeReport();
    this.safetyStatus.textContent = '';
    this.showBlocked(session.blockedByMe === true);
    this.olderStatus.textContent = 'Loading messages…';
    this.olderButton.hidden = true;
    this.input.focus();

    const page = await this.client.history(session.sessionId, { limit: PAGE });
    if (opening !== this.openCount) return;
    for (const m of page.messages) this.messages.set(m.seq, m);
    this.olderCursor = page.nextCursor;
    this.olderStatus.textContent = page.nextCursor === null && page.messages.length > 0 ? 'This is the start of the conversation.' : '';
    this.olderButton.hidden = page.nextCursor === null;
    this.render();
    this.scrollToBottom();
    // From the newest seq shown, the client delivers everything after it (and recovers it after a reconnect).
    await this.client.openSession(session.sessionId, { lastSeq: page.messages[0]?.seq ?? 0 });
    if (opening !== this.openCount) return;
    this.markSeen();
  }

  /** Stops showing the conversation (its messages still count as unread in the list). */
  leave(): void {
    if (!this.session) return;
    this.client.closeSession(this.session.sessionId);
    this.stopTyping();
    this.session = undefined;
    this.openCount++;
    this.pane.hidden = true;
    this.placeholder.hidden = false;
  }

  onMessage(message: ChatMessage): void {
    if (message.sessionId !== this.session?.sessionId) return;
    const atBottom = this.nearBottom();
    const known = this.messages.get(message.seq);
    // Receipts may have got here first: ticks only ever move forward.
    this.messages.set(message.seq, { ...message, delivered: message.delivered || !!known?.delivered, seen: message.seen || !!known?.seen });
    this.outgoing.delete(message.clientMessageId);
    if (!this.mine(message)) this.hideTyping();
    this.render();
    if (atBottom || this.mine(message)) this.scrollToBottom();
    this.markSeen();
  }

  /** An edit or delete: the message as it is now, in its place. */
  onChange(message: ChatMessage): void {
    if (message.sessionId !== this.session?.sessionId) return;
    const known = this.messages.get(message.seq);
    if (!known) return; // not loaded here: history shows it as it is when it is
    this.messages.set(message.seq, { ...message, delivered: message.delivered || known.delivered, seen: message.seen || known.seen });
    if (message.deleted && this.editing === message.seq) this.editing = undefined;
    this.render();
  }

  onReceipt(receipt: Receipt): void {
    if (receipt.sessionId !== this.session?.sessionId) return;
    const ids = new Set(receipt.messageIds);
    // A receipt from a sync lists no ids: it covers everything up to upToSeq.
    const upTo = receipt.messageIds.length === 0 ? receipt.upToSeq : 0;
    for (const [seq, m] of this.messages) {
      if (!this.mine(m)) continue;
      if (receipt.status === 'delivered' && (ids.has(m.messageId) || m.seq <= upTo)) this.messages.set(seq, { ...m, delivered: true });
      if (receipt.status === 'seen' && (m.seq <= receipt.upToSeq || ids.has(m.messageId))) this.messages.set(seq, { ...m, delivered: true, seen: true });
    }
    this.render();
  }

  onTyping(signal: TypingSignal): void {
    if (signal.sessionId !== this.session?.sessionId || signal.email === this.session.me.email) return;
    if (!signal.typing) return this.hideTyping();
    this.typingLine.textContent = `${this.session.peer.displayName || this.session.peer.email} is typing…`;
    clearTimeout(this.typingHide);
    this.typingHide = setTimeout(() => this.hideTyping(), TYPING_SHOWN_MS);
  }

  /** Marks the peer's unseen messages seen, when the page is actually visible. */
  markSeen(): void {
    const session = this.session;
    if (!session || document.visibilityState !== 'visible') return;
    let upTo = 0;
    for (const m of this.messages.values()) if (!this.mine(m) && !m.seen && m.seq > upTo) upTo = m.seq;
    if (upTo <= this.lastSeenSent) return;
    this.lastSeenSent = upTo;
    for (const [seq, m] of this.messages) if (!this.mine(m) && seq <= upTo) this.messages.set(seq, { ...m, seen: true });
    this.callbacks.seen(session.sessionId, upTo);
  }

  private send(): void {
    const session = this.session;
    const content = this.input.value;
    if (!session || content.trim() === '') return;
    const out = this.client.send(session.sessionId, content);
    this.outgoing.set(out.clientMessageId, { clientMessageId: out.clientMessageId, content, state: 'sending', createdAt: new Date().toISOString() });
    this.input.value = '';
    this.stopTyping();
    this.render();
    this.scrollToBottom();
    out.acked.then(
      (stored) => this.onMessage(stored),
      (err: unknown) => {
        const pending = this.outgoing.get(out.clientMessageId);
        if (!pending || this.session?.sessionId !== session.sessionId) return;
        pending.state = 'failed';
        pending.error = describeError(err as Error);
        this.render();
      },
    );
  }

  private showBlocked(blocked: boolean): void {
    this.blocked = blocked;
    this.blockButton.textContent = blocked ? 'Unblock' : 'Block';
    this.blockButton.setAttribute('aria-pressed', String(blocked));
    this.input.disabled = blocked;
    this.sendButton.disabled = blocked;
    this.input.placeholder = blocked ? 'You blocked this conversation. Unblock it to write again.' : 'Write a message…';
  }

  private async toggleBlock(): Promise<void> {
    const session = this.session;
    if (!session) return;
    const blocking = !this.blocked;
    if (blocking && !window.confirm(`Block ${session.peer.displayName || session.peer.email}? Neither of you can send messages here until you unblock.`)) return;
    this.blockButton.disabled = true;
    try {
      const { blocked } = blocking ? await this.client.block(session.sessionId) : await this.client.unblock(session.sessionId);
      if (this.session?.sessionId !== session.sessionId) return;
      this.showBlocked(blocked);
      if (blocked) this.stopTyping();
      this.safetyStatus.textContent = blocked ? 'Blocked. They cannot send you messages here.' : 'Unblocked.';
      this.callbacks.blockChanged(session.sessionId, blocked);
    } catch (err) {
      this.safetyStatus.textContent = `Could not ${blocking ? 'block' : 'unblock'}: ${describeError(err as Error)}`;
    } finally {
      this.blockButton.disabled = false;
    }
  }

  private closeReport(): void {
    this.reportForm.hidden = true;
    this.reportReason.value = '';
  }

  private async sendReport(): Promise<void> {
    const session = this.session;
    const reason = this.reportReason.value;
    if (!session || reason.trim() === '') return;
    let latest: ChatMessage | undefined;
    for (const m of this.messages.values()) if (!this.mine(m) && (!latest || m.seq > latest.seq)) latest = m;
    try {
      await this.client.report(session.sessionId, reason, latest?.messageId);
      if (this.session?.sessionId !== session.sessionId) return;
      this.closeReport();
      this.safetyStatus.textContent = 'Reported. Thank you: moderators will look at it.';
    } catch (err) {
      this.safetyStatus.textContent = `Could not report: ${describeError(err as Error)}`;
    }
  }

  private messageAction(event: Event): void {
    const button = event.target instanceof Element ? event.target.closest<HTMLButtonElement>('button[data-action]') : null;
    const seq = Number(button?.closest<HTMLLIElement>('li')?.dataset.seq);
    const message = this.messages.get(seq);
    if (!button || !message || !this.mine(message)) return;
    switch (button.dataset.action) {
      case 'edit':
        this.editing = seq;
        this.render();
        this.list.querySelector<HTMLTextAreaElement>('.message__edit-input')?.focus();
        return;
      case 'cancel':
        return this.cancelEdit();
      case 'delete':
        void this.change(message, () => this.client.deleteMessage(message.sessionId, message.messageId));
        return;
    }
  }

  private async saveEdit(): Promise<void> {
    const message = this.editing === undefined ? undefined : this.messages.get(this.editing);
    const input = this.list.querySelector<HTMLTextAreaElement>('.message__edit-input');
    if (!message || !input) return;
    const content = input.value;
    if (content.trim() === '' || content === message.content) return this.cancelEdit();
    this.editing = undefined;
    await this.change(message, () => this.client.editMessage(message.sessionId, message.messageId, content));
  }

  private cancelEdit(): void {
    this.editing = undefined;
    this.render();
  }

  /** Runs an edit or delete; the client reports the result as a change, drawn by onChange. */
  private async change(message: ChatMessage, run: () => Promise<ChatMessage>): Promise<void> {
    try {
      this.onChange(await run());
    } catch (err) {
      this.olderStatus.textContent = '';
      const row = this.nodes.get(`${message.senderEmail}|${message.clientMessageId}`);
      row?.querySelector('.message__error')?.remove();
      row?.querySelector('.bubble')?.append(h('p', { class: 'message__error', role: 'alert' }, `Not changed: ${describeError(err as Error)}`));
      this.render();
    }
  }

  private async loadOlder(): Promise<void> {
    const session = this.session;
    if (!session || this.loadingOlder || this.olderCursor === null) return;
    this.loadingOlder = true;
    this.olderStatus.textContent = 'Loading older messages…';
    const opening = this.openCount;
    try {
      const page = await this.client.history(session.sessionId, { limit: PAGE, before: this.olderCursor });
      if (opening !== this.openCount) return;
      const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
      for (const m of page.messages) if (!this.messages.has(m.seq)) this.messages.set(m.seq, m);
      this.olderCursor = page.nextCursor;
      this.olderButton.hidden = page.nextCursor === null;
      this.olderStatus.textContent = page.nextCursor === null ? 'This is the start of the conversation.' : '';
      this.render();
      this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom; // keep what the user was looking at in place
    } catch (err) {
      this.olderStatus.textContent = `Could not load older messages: ${describeError(err as Error)}`;
    } finally {
      this.loadingOlder = false;
    }
  }

  private render(): void {
    const stored = [...this.messages.values()].sort((a, b) => a.seq - b.seq);
    const rows = stored.map((m) => this.messageRow(m));
    for (const out of this.outgoing.values()) rows.push(this.outgoingRow(out));
    reconcile(this.list, rows);
  }

  private messageRow(m: ChatMessage): HTMLLIElement {
    const mine = this.mine(m);
    const status = !mine ? undefined : m.seen ? 'seen' : m.delivered ? 'delivered' : 'sent';
    return this.row(`${m.senderEmail}|${m.clientMessageId}`, {
      mine,
      sender: mine ? 'You' : m.senderDisplayName || m.senderEmail,
      content: m.content,
      time: m.sentAt,
      status,
      seq: m.seq,
      edited: !!m.editedAt && !m.deleted,
      deleted: m.deleted,
      editing: this.editing === m.seq && !m.deleted,
    });
  }

  private outgoingRow(out: Outgoing): HTMLLIElement {
    return this.row(`${this.session?.me.email}|${out.clientMessageId}`, { mine: true, sender: 'You', content: out.content, time: out.createdAt, status: out.state, error: out.error });
  }

  private row(
    key: string,
    m: { mine: boolean; sender: string; content: string; time: string; status?: string; error?: string; seq?: number; edited?: boolean; deleted?: boolean; editing?: boolean },
  ): HTMLLIElement {
    let item = this.nodes.get(key);
    const signature = JSON.stringify(m);
    if (item?.dataset.signature === signature) return item;
    if (!item) {
      item = h('li');
      this.nodes.set(key, item);
    }
    item.className = `message ${m.mine ? 'message--mine' : 'message--theirs'}${m.deleted ? ' message--deleted' : ''}`;
    item.dataset.signature = signature;
    if (m.status) item.dataset.status = m.status;
    else delete item.dataset.status;
    if (m.seq !== undefined) item.dataset.seq = String(m.seq);
    item.replaceChildren(
      h(
        'div',
        { class: 'bubble' },
        h('span', { class: 'visually-hidden' }, `${m.sender}: `),
        m.editing ? editForm(m.content) : h('p', { class: 'message__text' }, m.deleted ? 'Message deleted' : m.content),
        h(
          'p',
          { class: 'message__meta' },
          m.edited ? h('span', { class: 'message__edited' }, 'edited') : null,
          h('time', { datetime: m.time, title: fullTime(m.time) }, shortTime(m.time)),
          m.status ? ticks(m.status) : null,
        ),
        m.mine && m.seq !== undefined && !m.deleted && !m.editing
          ? h(
              'p',
              { class: 'message__actions' },
              h('button', { type: 'button', class: 'link-button', 'data-action': 'edit', 'aria-label': 'Edit message' }, 'Edit'),
              h('button', { type: 'button', class: 'link-button', 'data-action': 'delete', 'aria-label': 'Delete message' }, 'Delete'),
            )
          : null,
        m.error ? h('p', { class: 'message__error' }, `Not sent: ${m.error}`) : null,
      ),
    );
    return item;
  }

  private typed(): void {
    const session = this.session;
    if (!session) return;
    if (this.input.value.trim() === '') return this.stopTyping();
    const now = Date.now();
    if (now - this.typingSentAt > TYPING_SEND_EVERY_MS) {
      this.typingSentAt = now;
      this.client.typing(session.sessionId, true);
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  private stopTyping(): void {
    clearTimeout(this.typingIdle);
    if (this.typingSentAt > 0 && this.session) this.client.typing(this.session.sessionId, false);
    this.typingSentAt = 0;
  }

  private hideTyping(): void {
    clearTimeout(this.typingHide);
    this.typingLine.textContent = '';
  }

  private mine(m: ChatMessage): boolean {
    return m.senderEmail === this.session?.me.email;
  }

  private nearBottom(): boolean {
    return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  private scrollToBottom(): void {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

function editForm(content: string): HTMLFormElement {
  const input = h('textarea', { class: 'message__edit-input', rows: 2, maxlength: 4000, 'aria-label': 'Edit message' });
  input.value = content;
  return h(
    'form',
    { class: 'message__edit' },
    input,
    h('button', { type: 'submit', 'data-action': 'save' }, 'Save'),
    h('button', { type: 'button', class: 'link-button', 'data-action': 'cancel' }, 'Cancel'),
  );
}

const TICKS: Record<string, { mark: string; label: string }> = {
  sending: { mark: '🕓', label: 'Sending' },
  failed: { mark: '!', label: 'Not sent' },
  sent: { mark: '✓', label: 'Sent' },
  delivered: { mark: '✓✓', label: 'Delivered' },
  seen: { mark: '✓✓', label: 'Seen' },
};

function ticks(status: string): HTMLElement {
  const tick = TICKS[status] ?? { mark: '', label: status };
  return h('span', { class: `ticks ticks--${status}`, role: 'img', 'aria-label': tick.label, title: tick.label }, tick.mark);
}
