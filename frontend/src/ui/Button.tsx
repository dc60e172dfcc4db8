import type { ButtonHTMLAttributes, ReactNode } from 'react';
import { Spinner } from './states';

export type ButtonVariant = 'primary' | 'secondary' | 'danger' | 'ghost';

export interface ButtonProps extends ButtonHTMLAttributes<HTMLButtonElement> {
  variant?: ButtonVariant;
  size?: 'normal' | 'small';
  /** Shows a spinner, disables the button and sets `aria-busy`. */
  busy?: boolean;
  children: ReactNode;
}

/** A button that is `type="button"` unless told otherwise, so it never submits by accident. */
export function Button({
  variant = 'secondary',
  size = 'normal',
  busy = false,
  disabled,
  className,
  type = 'button',
  children,
  ...rest
}: ButtonProps) {
  const classes = ['button', `button--${variant}`, size === 'small' ? 'button--small' : '', className ?? '']
    .filter(Boolean)
    .join(' ');
  return (
    <button
      {...rest}
      type={type}
      className={classes}
      disabled={disabled || busy}
      aria-busy={busy || undefined}
    >
      {busy && <Spinner size="small" label={null} />}
      {children}
    </button>
  );
}
