/**
 * The page's controller: signs in, owns the one ChatClient, keeps the conversation list (last
 * message, unread count) in step with the client's events, and hands events to the open
 * conversation. Switching transport or signing out closes the client and builds a new one.
 */
import { ChatClient, type ChatClientError, type ChatMessage, type ChatTransport, type Presence, type Receipt, type SessionSummary, fetchDevToken } from '../../client/index.js';
import { ConversationListView } from './conversation-list-view.js';
import { ConversationView } from './conversation-view.js';
import { h } from './dom.js';
import { describeError, isConnectivityError, type Notices } from './notices.js';
import { renderSignIn } from './sign-in-view.js';
import { loadOpenSession, loadSignIn, saveOpenSession, saveSignIn, type SignIn } from './sign-in-store.js';

export class ChatApp {
  private client: ChatClient | undefined;
  private signIn: SignIn | undefined;
  private list: ConversationListView | undefined;
  private conversation: ConversationView | undefined;
  private readonly sessions = new Map<string, SessionSummary>();
  /** Unread messages in sessions beyond the listed ones (the list holds the 200 most recent). */
  private unreadElsewhere = 0;
  /** Peers' presence by email: read over REST for each session, then kept by presence events. */
  private readonly presence = new Map<string, Presence>();
  /** After a reconnect, changes made meanwhile were not sent: read every peer's presence again. */
  private presenceStale = true;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly main: HTMLElement,
    private readonly notices: Notices,
    private readonly signOutButton: HTMLButtonElement,
    private readonly who: HTMLElement,
    private transport: ChatTransport,
  ) {
    signOutButton.addEventListener('click', () => void this.signOut());
    document.addEventListener('visibilitychange', () => this.conversation?.markSeen());
  }

  start(): void {
    const saved = loadSignIn();
    if (saved) void this.begin(saved);
    else this.showSignIn();
  }

  async setTransport(transport: ChatTransport): Promise<void> {
    this.transport = transport;
    if (!this.signIn) return;
    await this.stopClient();
    await this.begin(this.signIn);
  }

  private showSignIn(notice?: string): void {
    this.signOutButton.hidden = true;
    this.who.textContent = '';
    this.notices.showConnection('signed-out', this.transport);
    renderSignIn(this.main, location.origin, (signIn) => void this.begin(signIn), notice);
  }

  private async begin(signIn: SignIn): Promise<void> {
    this.signIn = signIn;
    saveSignIn(signIn);
    this.notices.clearErrors();
    const baseUrl = location.origin;
    const tokenProvider = signIn.kind === 'dev' ? async () => (await fetchDevToken(baseUrl, signIn.email, signIn.displayName || undefined)).token : async () => signIn.token;
    const client = new ChatClient({ baseUrl, tokenProvider, transport: this.transport });
    this.client = client;
    this.sessions.clear();
    this.presence.clear();

    this.list = new ConversationListView({ open: (id) => void this.open(id), start: (email, intent) => this.startChat(email, intent) });
    this.conversation = new ConversationView(client, {
      seen: (id, upToSeq) => this.seen(id, upToSeq),
      blockChanged: (id, blocked) => {
        const session = this.sessions.get(id);
        if (session) session.blockedByMe = blocked;
        this.renderList();
      },
    });
    this.main.replaceChildren(h('div', { class: 'layout' }, this.list.element, this.conversation.element));
    this.signOutButton.hidden = false;
    this.who.textContent = signIn.kind === 'dev' ? `${signIn.displayName || signIn.email}` : '';

    client.on('state', (state, detail) => {
      if (client !== this.client) return;
      this.notices.showConnection(state, this.transport, detail);
      if (state === 'connected') {
        this.notices.clearTransientErrors();
        this.who.textContent ||= client.userEmail ?? '';
        this.presenceStale = true;
        this.refreshSoon(0); // unread counts and presence may have moved while we were away
      }
      if (state === 'disconnected' && detail.error?.code === 'UNAUTHENTICATED') {
        void this.signOut('The service no longer accepts this sign-in (expired or revoked token). Sign in again.');
      }
    });
    client.on('message', (m) => client === this.client && this.onMessage(m));
    client.on('change', (m) => client === this.client && this.onChange(m));
    client.on('receipt', (r) => client === this.client && this.onReceipt(r));
    client.on('typing', (s) => client === this.client && this.conversation?.onTyping(s));
    client.on('presence', (p) => client === this.client && this.onPresence(p));
    client.on('error', (e) => client === this.client && this.onError(e));
    client.connect();

    await this.refreshSessions();
    const reopen = loadOpenSession();
    if (reopen && this.sessions.has(reopen)) await this.open(reopen);
    else this.list.focusStart();
  }

  private async signOut(notice?: string): Promise<void> {
    this.signIn = undefined;
    saveSignIn(undefined);
    await this.stopClient();
    this.notices.clearErrors();
    this.showSignIn(notice);
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    clearTimeout(this.refreshTimer);
    this.conversation?.leave();
    this.conversation = undefined;
    this.list = undefined;
    this.unreadElsewhere = 0;
    this.showUnreadInTitle();
    await client?.close();
  }

  private async open(sessionId: string): Promise<void> {
    const session = this.sessions.get(sessionId);
    if (!session || !this.conversation) return;
    saveOpenSession(sessionId);
    session.unreadCount = 0;
    this.renderList();
    try {
      const opening = this.conversation.open(session);
      const presence = this.presence.get(session.peer.email);
      this.conversation.showPresence(presence);
      // A conversation just started: its peer's presence was never read.
      if (!presence && this.client) void this.loadPresence(this.client);
      await opening;
    } catch (err) {
      this.notices.error(`Could not open the conversation: ${describeError(err as Error)}`, { transient: isConnectivityError(err) });
    }
  }

  private async startChat(email: string, intent: string): Promise<void> {
    const client = this.client;
    if (!client) return;
    try {
      const session = await client.initSession(email, intent);
      if (!this.sessions.has(session.sessionId)) this.sessions.set(session.sessionId, { ...session, lastSeq: 0, lastMessage: null, unreadCount: 0, blockedByMe: false });
      await this.open(session.sessionId);
    } catch (err) {
      throw new Error(describeError(err as Error), { cause: err });
    }
  }

  private seen(sessionId: string, upToSeq: number): void {
    const session = this.sessions.get(sessionId);
    if (session) session.unreadCount = 0;
    this.renderList();
    this.client?.markSeen(sessionId, upToSeq).catch((err: unknown) => this.notices.error(describeError(err as Error), { transient: isConnectivityError(err) }));
  }

  private onMessage(m: ChatMessage): void {
    const session = this.sessions.get(m.sessionId);
    if (!session) {
      this.refreshSoon(); // a conversation someone just started with me
      return;
    }
    if (m.seq > session.lastSeq) {
      // Anything up to lastSeq is already in the server's unread count.
      const viewing = this.conversation?.sessionId === m.sessionId && document.visibilityState === 'visible';
      if (m.senderEmail !== session.me.email && !m.seen && !viewing) session.unreadCount++;
      session.lastSeq = m.seq;
      session.lastMessage = m;
    }
    this.conversation?.onMessage(m);
    this.renderList();
  }

  private onChange(m: ChatMessage): void {
    const session = this.sessions.get(m.sessionId);
    if (session?.lastMessage?.messageId === m.messageId) {
      session.lastMessage = m;
      this.renderList();
    }
    this.conversation?.onChange(m);
  }

  private onReceipt(r: Receipt): void {
    const session = this.sessions.get(r.sessionId);
    // My own read, made in another tab or device.
    if (session && r.status === 'seen' && r.readerEmail === session.me.email) {
      session.unreadCount = 0;
      this.renderList();
    }
    this.conversation?.onReceipt(r);
  }

  private onPresence(presence: Presence): void {
    this.presence.set(presence.email, presence);
    if (this.conversation?.peerEmail === presence.email) this.conversation.showPresence(presence);
    this.renderList();
  }

  /** Reads the presence of every peer not known yet (all of them after a reconnect), one session each. */
  private async loadPresence(client: ChatClient): Promise<void> {
    const stale = this.presenceStale;
    this.presenceStale = false;
    const sessionOf = new Map<string, string>();
    for (const s of this.sessions.values()) if (stale || !this.presence.has(s.peer.email)) sessionOf.set(s.peer.email, s.sessionId);
    await Promise.all(
      [...sessionOf].map(async ([email, sessionId]) => {
        try {
          const presence: Presence = { email, ...(await client.presence(sessionId)) };
          if (client !== this.client) return;
          this.presence.set(email, presence);
          if (this.conversation?.peerEmail === presence.email) this.conversation.showPresence(presence);
        } catch {
          // Presence is a nicety: the list works without it, and the next refresh tries again.
        }
      }),
    );
    if (client === this.client) this.renderList();
  }

  private onError(error: ChatClientError): void {
    // A refused send is shown on its message; everything else here.
    if (error.details.clientMessageId) return;
    this.notices.error(describeError(error), { transient: isConnectivityError(error) });
  }

  private refreshSoon(delayMs = 150): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refreshSessions(), delayMs);
  }

  private async refreshSessions(): Promise<void> {
    const client = this.client;
    if (!client) return;
    let fresh: SessionSummary[];
    let totals: { total: number };
    try {
      [fresh, totals] = await Promise.all([client.listSessions(), client.unreadCount()]);
    } catch (err) {
      if (client === this.client) this.notices.error(`Could not load conversations: ${describeError(err as Error)}`, { transient: isConnectivityError(err) });
      return;
    }
    if (client !== this.client) return;
    for (const s of fresh) {
      const known = this.sessions.get(s.sessionId);
      const viewing = this.conversation?.sessionId === s.sessionId && document.visibilityState === 'visible';
      // Keep whatever the live events already moved further than this snapshot.
      const merged = known && known.lastSeq > s.lastSeq ? { ...s, lastSeq: known.lastSeq, lastMessage: known.lastMessage } : s;
      this.sessions.set(s.sessionId, viewing ? { ...merged, unreadCount: 0 } : merged);
      // Messages after this snapshot arrive as events; a session already tracked keeps its place.
      if (client.lastSeq(s.sessionId) === undefined) client.trackSession(s.sessionId, s.lastSeq);
    }
    this.unreadElsewhere = Math.max(0, totals.total - fresh.reduce((sum, s) => sum + s.unreadCount, 0));
    this.renderList();
    await this.loadPresence(client);
  }

  private renderList(): void {
    this.list?.render([...this.sessions.values()], this.conversation?.sessionId, (email) => this.presence.get(email));
    this.showUnreadInTitle();
  }

  /** "(3) Chat": every unread message, kept live by the same events that move the list's badges. */
  private showUnreadInTitle(): void {
    let total = this.client ? this.unreadElsewhere : 0;
    if (this.client) for (const s of this.sessions.values()) total += s.unreadCount;
    document.title = total > 0 ? `(${total > 999 ? '999+' : total}) Chat` : 'Chat';
  }
}
