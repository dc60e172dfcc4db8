update step_attempts set status = 'failed', finished_at = clock_timestamp(), error = $4,
                retry_delay_ms = $5
          where run_id = $1 and step_id = $2 and attempt = $3