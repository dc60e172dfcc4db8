// The design system: small components over the CSS variables in src/styles.css.
export { Button } from './Button';
export { Badge, StatusPill } from './StatusPill';
export { Dialog } from './Dialog';
export { Field } from './Field';
export { EmptyState, ErrorState, InlineError, Loading, Spinner } from './states';
export { ErrorBoundary } from './ErrorBoundary';
export { JsonView } from './JsonView';
export { LiveIndicator } from './LiveIndicator';
export { PageHeader, Panel } from './Panel';
export { Table, type Column } from './Table';
export { DateTime, RelativeTime, useNow } from './Time';
export { ToastProvider, useToast } from './Toast';
