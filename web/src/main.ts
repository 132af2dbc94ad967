/** Entry of the web chat page (built by Vite into web/dist and served by the service at /). */
import { CHAT_TRANSPORTS, type ChatTransport } from '../../client/index.js';
import { ChatApp } from './chat-app.js';
import { byId } from './dom.js';
import { Notices } from './notices.js';
import { loadTransport, saveTransport } from './sign-in-store.js';

const transportSelect = byId<HTMLSelectElement>('transport');
const transport = loadTransport();
transportSelect.value = transport;

const app = new ChatApp(byId('main'), new Notices(), byId<HTMLButtonElement>('sign-out'), byId('who'), transport);
transportSelect.addEventListener('change', () => {
  const chosen = transportSelect.value as ChatTransport;
  if (!CHAT_TRANSPORTS.includes(chosen)) return;
  saveTransport(chosen);
  void app.setTransport(chosen);
});
app.start();
