import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from 'react';
import type { Tone } from '../lib/status';

interface Toast {
  id: number;
  tone: Tone;
  text: ReactNode;
}

interface ToastApi {
  notify: (text: ReactNode, tone?: Tone) => void;
}

const ToastContext = createContext<ToastApi>({ notify: () => {} });

/** Short confirmations of finished actions, announced politely to screen readers. */
export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const next = useRef(1);
  const dismiss = useCallback((id: number) => setToasts((ts) => ts.filter((t) => t.id !== id)), []);
  const notify = useCallback(
    (text: ReactNode, tone: Tone = 'success') => {
      const id = next.current++;
      setToasts((ts) => [...ts.slice(-3), { id, tone, text }]);
      setTimeout(() => dismiss(id), 6000);
    },
    [dismiss],
  );
  const api = useMemo(() => ({ notify }), [notify]);
  return (
    <ToastContext.Provider value={api}>
      {children}
      <div className="toasts" role="status" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast tone-${t.tone}`}>
            <div className="grow">{t.text}</div>
            <button type="button" className="button button--ghost button--small" onClick={() => dismiss(t.id)}>
              <span aria-hidden="true">×</span>
              <span className="sr-only">Dismiss</span>
            </button>
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}

export function useToast(): ToastApi {
  return useContext(ToastContext);
}
